//! Login challenges: a nonce the card signs, single use, short lived, bound to the RP that
//! asked for it — and usable at any instance (active-active, no sticky routing).
//!
//! A challenge carries its own state: `challenge_id` is an opaque token
//! `base64url(version ‖ expiry ms ‖ random id ‖ RP tag ‖ MAC)`, the MAC an HMAC-SHA-256 under a
//! key every instance reads from `auth_challenge_key` (created by the first instance). The
//! nonce is derived from the same key, the token and the RP's full id, so nothing about an
//! open challenge is stored anywhere: issuing costs no memory and no database work, and no
//! relying party can exhaust anything another one needs. Single use is enforced by inserting
//! the random id into `auth_challenge_used` (primary key) when a login presents it: of two
//! instances racing with the same challenge, exactly one insert succeeds. Used ids are pruned
//! after their expiry.

use ring::hmac;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// How long a challenge may be answered.
pub const CHALLENGE_TTL_SECS: i64 = 120;

/// Nonce length: 32 bytes (256 bits).
pub const NONCE_BYTES: usize = 32;

/// A used challenge id is forgotten only this long after its expiry: an instance whose clock
/// runs behind another's still accepts a challenge a little past its expiry, so the id must
/// still be known as used then (clock skew between instances is far below a minute).
pub const CLAIM_PRUNE_MARGIN_MS: i64 = 60_000;

/// Bytes of the shared challenge key.
pub const CHALLENGE_KEY_BYTES: usize = 32;

const VERSION: u8 = 1;
/// Bytes of the RP tag: tells "another RP's challenge" from "forged"; not the binding itself
/// (the MAC and the nonce cover the RP's full id).
const RP_TAG: usize = 8;
/// HMAC-SHA-256, whole.
const MAC: usize = 32;
// The body's fields: version, expiry (ms, big-endian), random id, RP tag.
const EXPIRY: std::ops::Range<usize> = 1..9;
const ID: std::ops::Range<usize> = 9..25;
const TAG: std::ops::Range<usize> = 25..25 + RP_TAG;
const BODY: usize = 25 + RP_TAG;
const TOKEN: usize = BODY + MAC;
/// Longest accepted `challenge_id` text (base64url of [`TOKEN`] bytes is 87).
pub const MAX_CHALLENGE_ID_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("unknown challenge")]
    Unknown,
    #[error("challenge already used")]
    Used,
    #[error("challenge expired")]
    Expired,
    #[error("challenge was issued to another client")]
    OtherClient,
}

impl ChallengeError {
    pub fn code(&self) -> &'static str {
        match self {
            ChallengeError::Unknown => "CHALLENGE_UNKNOWN",
            ChallengeError::Used => "CHALLENGE_USED",
            ChallengeError::Expired => "CHALLENGE_EXPIRED",
            ChallengeError::OtherClient => "CHALLENGE_OTHER_CLIENT",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Issued {
    /// The opaque `challenge_id`.
    pub token: String,
    pub nonce: [u8; NONCE_BYTES],
    pub expires_at_ms: i64,
}

/// A presented challenge that is authentic, this RP's and unexpired (not yet claimed).
#[derive(Debug, Clone)]
pub struct Opened {
    /// The single-use key for `auth_challenge_used`.
    pub id: Uuid,
    pub nonce: [u8; NONCE_BYTES],
    pub expires_at_ms: i64,
}

/// Issues and opens challenges under the key shared by every instance.
pub struct Challenges {
    key: hmac::Key,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Challenges(<key redacted>)")
    }
}

fn rp_tag(rp_id: &str) -> [u8; RP_TAG] {
    let h = Sha256::digest(rp_id.as_bytes());
    let mut t = [0u8; RP_TAG];
    t.copy_from_slice(&h[..RP_TAG]);
    t
}

impl Challenges {
    pub fn new(secret: &[u8]) -> Challenges {
        Challenges {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    fn nonce(&self, body: &[u8], rp_id: &str) -> [u8; NONCE_BYTES] {
        let tag = hmac::sign(&self.key, &message(NONCE_LABEL, body, rp_id));
        let mut n = [0u8; NONCE_BYTES];
        n.copy_from_slice(&tag.as_ref()[..NONCE_BYTES]);
        n
    }

    /// Issues a challenge for `rp_id` at `now_ms`. Stateless: never refused.
    pub fn issue(&self, rp_id: &str, now_ms: i64) -> Issued {
        let expires_at_ms = now_ms + CHALLENGE_TTL_SECS * 1000;
        let mut body = [0u8; BODY];
        body[0] = VERSION;
        body[EXPIRY].copy_from_slice(&expires_at_ms.to_be_bytes());
        body[ID].copy_from_slice(Uuid::new_v4().as_bytes());
        body[TAG].copy_from_slice(&rp_tag(rp_id));
        let mac = hmac::sign(&self.key, &message(MAC_LABEL, &body, rp_id));
        let mut token = [0u8; TOKEN];
        token[..BODY].copy_from_slice(&body);
        token[BODY..].copy_from_slice(mac.as_ref());
        Issued {
            token: b64(&token),
            nonce: self.nonce(&body, rp_id),
            expires_at_ms,
        }
    }

    /// Checks a presented `challenge_id` for `rp_id` at `now_ms`. The RP is checked before
    /// expiry (another RP learns nothing about it); single use is the caller's claim in the
    /// database.
    pub fn open(&self, token: &str, rp_id: &str, now_ms: i64) -> Result<Opened, ChallengeError> {
        use base64::Engine;
        if token.len() > MAX_CHALLENGE_ID_LEN {
            return Err(ChallengeError::Unknown);
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| ChallengeError::Unknown)?;
        if raw.len() != TOKEN || raw[0] != VERSION {
            return Err(ChallengeError::Unknown);
        }
        let (body, mac) = raw.split_at(BODY);
        if body[TAG] != rp_tag(rp_id) {
            return Err(ChallengeError::OtherClient);
        }
        // ring compares in constant time.
        hmac::verify(&self.key, &message(MAC_LABEL, body, rp_id), mac)
            .map_err(|_| ChallengeError::Unknown)?;
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&body[EXPIRY]);
        let expires_at_ms = i64::from_be_bytes(exp);
        if now_ms > expires_at_ms {
            return Err(ChallengeError::Expired);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[ID]);
        Ok(Opened {
            id: Uuid::from_bytes(id),
            nonce: self.nonce(body, rp_id),
            expires_at_ms,
        })
    }
}

/// base64url without padding: the form of `challenge_id` and `nonce`.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

const MAC_LABEL: &[u8] = b"mykey-challenge-mac\0";
const NONCE_LABEL: &[u8] = b"mykey-challenge-nonce\0";

/// What the MAC and the nonce are computed over: a label (the two never coincide), the
/// fixed-length body, then the RP's full id (the tag in the body is only 64 bits of it).
fn message(label: &[u8], body: &[u8], rp_id: &str) -> Vec<u8> {
    [label, body, rp_id.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenges() -> Challenges {
        Challenges::new(&[7u8; CHALLENGE_KEY_BYTES])
    }

    #[test]
    fn bound_to_rp_key_and_expiry() {
        let s = challenges();
        let c = s.issue("rp-a", 0);
        assert_eq!(
            s.open(&c.token, "rp-b", 1).err(),
            Some(ChallengeError::OtherClient)
        );
        let opened = s
            .open(&c.token, "rp-a", 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opened.nonce, c.nonce);
        assert_eq!(
            s.open(&c.token, "rp-a", CHALLENGE_TTL_SECS * 1000 + 1)
                .err(),
            Some(ChallengeError::Expired)
        );
        // Another instance with the same key opens it; one with another key does not.
        let same = challenges();
        assert!(same.open(&c.token, "rp-a", 1).is_ok());
        let other = Challenges::new(&[8u8; CHALLENGE_KEY_BYTES]);
        assert_eq!(
            other.open(&c.token, "rp-a", 1).err(),
            Some(ChallengeError::Unknown)
        );
        let d = s.issue("rp-a", 0);
        assert_ne!(c.nonce, d.nonce);
        assert_ne!(c.token, d.token);
    }

    #[test]
    fn forged_or_garbled_ids_are_unknown() {
        let s = challenges();
        let c = s.issue("rp-a", 0);
        let uuid = Uuid::new_v4().to_string();
        for bad in [
            "",
            "%%%",
            uuid.as_str(),
            &"A".repeat(MAX_CHALLENGE_ID_LEN + 1),
        ] {
            assert_eq!(
                s.open(bad, "rp-a", 1).err(),
                Some(ChallengeError::Unknown),
                "{bad}"
            );
        }
        // A later expiry written into an authentic token breaks its MAC.
        use base64::Engine;
        let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&c.token)
            .unwrap_or_default();
        raw[8] ^= 0x01;
        let forged = b64(&raw);
        assert_eq!(
            s.open(&forged, "rp-a", 1).err(),
            Some(ChallengeError::Unknown)
        );
    }

    /// Issue 8 item 2: one RP cycling issue → burn can no longer starve the others. The old
    /// store refused every RP after 500,000 challenges in a validity window; issuing now keeps
    /// no state at all.
    #[test]
    fn one_rp_at_full_burn_leaves_another_unaffected() {
        let s = challenges();
        for _ in 0..=500_000 {
            let c = s.issue("flooder", 0);
            assert!(s.open(&c.token, "flooder", 1).is_ok());
        }
        let b = s.issue("other", 2);
        assert!(s.open(&b.token, "other", 3).is_ok());
    }
}
