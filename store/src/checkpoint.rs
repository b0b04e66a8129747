//! Signed checkpoints of the event log as C2SP signed notes (<https://c2sp.org/signed-note>)
//! in the tlog-checkpoint layout (<https://c2sp.org/tlog-checkpoint>). Pure: no I/O, no clock;
//! the server signs with it and `mykey-replay` verifies with it.
//!
//! ```text
//! mykey.example/log                                 origin (also the signing key's name)
//! 1234                                              tree size = global position
//! q1y9...base64 of 32 bytes...=                     hash of the event at that position
//! time 2026-11-30T10:00:00Z                         extension line: when it was signed
//!
//! — mykey.example/log AbCd...base64(4-byte key id || 64-byte Ed25519 signature)
//! ```
//!
//! The third line is the **hash-chain head** (the `hash` of the event at that position, which
//! commits to every earlier event through `prev_hash`), not yet an RFC 6962 Merkle root. A
//! Merkle root can be added later as a further extension line without changing the format:
//! readers ignore extension lines they do not know. Key id, as C2SP defines it for Ed25519:
//! the first 4 bytes of `SHA-256(key name || 0x0A || 0x01 || 32-byte public key)`. Public keys
//! travel as the verifier-key string of the Go `note` package:
//! `<name>+<8 hex key id>+<base64(0x01 || public key)>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use mykey_schemas::Hash;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use sha2::{Digest, Sha256};

/// C2SP signature type byte of Ed25519.
pub const ED25519_TYPE: u8 = 0x01;

/// Bytes of an Ed25519 signature.
const SIGNATURE_BYTES: usize = 64;

/// Largest note accepted: a checkpoint is a few lines; C2SP asks verifiers to bound notes and
/// to accept at least 16 signatures (this leaves room for 16 post-quantum ones).
pub const MAX_NOTE_BYTES: usize = 96 * 1024;

/// Most signature lines read from one note.
pub const MAX_SIGNATURES: usize = 64;

/// Prefix of the extension line carrying the signing time.
const TIME_PREFIX: &str = "time ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("note is malformed: {0}")]
    Malformed(String),
    #[error("key name {0:?} is not valid (non-empty, no spaces, no '+')")]
    BadKeyName(String),
    #[error("verifier key is malformed: {0}")]
    BadVerifierKey(String),
    #[error("no signature by a known key (key names seen: {0})")]
    NoKnownSignature(String),
    #[error("the signature by {name} ({key_id}) does not verify: the note was altered or forged")]
    BadSignature { name: String, key_id: String },
}

impl NoteError {
    /// Stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            NoteError::Malformed(_) => "CHECKPOINT_MALFORMED",
            NoteError::BadKeyName(_) => "CHECKPOINT_KEY_NAME",
            NoteError::BadVerifierKey(_) => "CHECKPOINT_VERIFIER_KEY",
            NoteError::NoKnownSignature(_) => "CHECKPOINT_UNKNOWN_KEY",
            NoteError::BadSignature { .. } => "CHECKPOINT_BAD_SIGNATURE",
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// The C2SP key id of an Ed25519 public key under `name`.
pub fn key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(public_key);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// A public key that verifies notes: name, key id and the 32-byte Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub id: [u8; 4],
    pub public_key: [u8; 32],
}

impl VerifierKey {
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<VerifierKey, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::BadKeyName(name.to_owned()));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            id: key_id(name, &public_key),
            public_key,
        })
    }

    /// Parses `<name>+<hex id>+<base64(0x01 || key)>`; the id must match the key.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let bad = |why: &str| NoteError::BadVerifierKey(why.to_owned());
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<key id hex>+<base64 key>"));
        };
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| bad("key id is not 8 hex digits"))?;
        let raw = B64.decode(key_b64).map_err(|_| bad("key is not base64"))?;
        let Some((&ED25519_TYPE, key)) = raw.split_first() else {
            return Err(bad("not an Ed25519 (type 0x01) key"));
        };
        let public_key: [u8; 32] = key.try_into().map_err(|_| bad("key is not 32 bytes"))?;
        let k = VerifierKey::new(name, public_key)?;
        if k.id != id {
            return Err(bad("key id does not match the key"));
        }
        Ok(k)
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ED25519_TYPE);
        raw.extend_from_slice(&self.public_key);
        write!(f, "{}+{}+{}", self.name, self.id_hex(), B64.encode(raw))
    }
}

/// What a checkpoint states: the log named `origin` had `size` events, the last one hashing to
/// `hash`, at `time`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub hash: Hash,
    /// Whole seconds (the note carries RFC 3339 without fractions).
    pub time: DateTime<Utc>,
}

impl Checkpoint {
    /// The note text (what is signed), ending in a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n{TIME_PREFIX}{}\n",
            self.origin,
            self.size,
            B64.encode(self.hash.0),
            self.time.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// Parses a note text. Unknown extension lines are ignored (a later Merkle root, say).
    pub fn parse_body(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: String| NoteError::Malformed(why);
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the text must end in a newline".into()))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("empty origin line".into()));
        }
        let size_line = lines.next().unwrap_or_default();
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(bad(format!("tree size {size_line:?} is not a decimal")));
        }
        let size: u64 = size_line
            .parse()
            .map_err(|_| bad(format!("tree size {size_line:?} is out of range")))?;
        let hash_line = lines.next().unwrap_or_default();
        let hash = B64
            .decode(hash_line)
            .ok()
            .and_then(|b| Hash::from_slice(&b))
            .ok_or_else(|| bad("the hash line is not base64 of 32 bytes".into()))?;
        let mut time = None;
        for ext in lines {
            if ext.is_empty() {
                return Err(bad("empty extension line".into()));
            }
            if let Some(t) = ext.strip_prefix(TIME_PREFIX) {
                let parsed = DateTime::parse_from_rfc3339(t)
                    .map_err(|_| bad(format!("time {t:?} is not RFC 3339")))?;
                time = Some(parsed.with_timezone(&Utc));
            }
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            hash,
            time: time.ok_or_else(|| bad("no time line".into()))?,
        })
    }
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// A note split into its text and its signature lines (nothing verified yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    pub fn parse(note: &str) -> Result<SignedNote, NoteError> {
        let bad = |why: &str| NoteError::Malformed(why.to_owned());
        if note.len() > MAX_NOTE_BYTES {
            return Err(bad("note too large"));
        }
        if note.chars().any(|c| c < ' ' && c != '\n') {
            return Err(bad("control character in note"));
        }
        // The text ends at the last blank line ("\n\n"); signatures follow it.
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let text = &note[..split + 1];
        let sigs = note[split + 2..]
            .strip_suffix('\n')
            .ok_or_else(|| bad("the last signature line must end in a newline"))?;
        let mut signatures = Vec::new();
        for line in sigs.split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(bad("too many signatures"));
            }
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| bad("a signature line must start with an em dash and a space"))?;
            let (name, sig_b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("a signature line is <name> <base64>"))?;
            if !valid_name(name) {
                return Err(NoteError::BadKeyName(name.to_owned()));
            }
            let raw = B64
                .decode(sig_b64)
                .map_err(|_| bad("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(bad("signature too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: [raw[0], raw[1], raw[2], raw[3]],
                signature: raw[4..].to_vec(),
            });
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }

    /// Checks the note against `keys`: at least one known key's signature must verify, and a
    /// known key's signature that does not verify rejects the note (C2SP). Unknown keys (a
    /// witness's cosignature, say) are ignored. Returns the keys that verified.
    pub fn verify(&self, keys: &[VerifierKey]) -> Result<Vec<VerifierKey>, NoteError> {
        let mut good = Vec::new();
        for sig in &self.signatures {
            let Some(key) = keys
                .iter()
                .find(|k| k.name == sig.name && k.id == sig.key_id)
            else {
                continue;
            };
            let ok = sig.signature.len() == SIGNATURE_BYTES
                && UnparsedPublicKey::new(&ED25519, key.public_key)
                    .verify(self.text.as_bytes(), &sig.signature)
                    .is_ok();
            if !ok {
                return Err(NoteError::BadSignature {
                    name: sig.name.clone(),
                    key_id: hex::encode(sig.key_id),
                });
            }
            good.push(key.clone());
        }
        if good.is_empty() {
            let names: Vec<&str> = self.signatures.iter().map(|s| s.name.as_str()).collect();
            return Err(NoteError::NoKnownSignature(names.join(", ")));
        }
        Ok(good)
    }
}

/// Signs `checkpoint` with `key` under the checkpoint's origin as key name.
pub fn sign(checkpoint: &Checkpoint, key: &Ed25519KeyPair) -> Result<String, NoteError> {
    let name = &checkpoint.origin;
    if !valid_name(name) {
        return Err(NoteError::BadKeyName(name.clone()));
    }
    let body = checkpoint.body();
    let id = key_id(name, key.public_key().as_ref());
    let sig = key.sign(body.as_bytes());
    let mut raw = Vec::with_capacity(4 + SIGNATURE_BYTES);
    raw.extend_from_slice(&id);
    raw.extend_from_slice(sig.as_ref());
    Ok(format!("{body}\n\u{2014} {name} {}\n", B64.encode(raw)))
}

/// The verifier key of `key` under `name`.
pub fn verifier_key(name: &str, key: &Ed25519KeyPair) -> Result<VerifierKey, NoteError> {
    let public: [u8; 32] = key
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| NoteError::BadVerifierKey("not a 32-byte key".into()))?;
    VerifierKey::new(name, public)
}

/// Parses and verifies a signed checkpoint note with `keys`.
pub fn open(note: &str, keys: &[VerifierKey]) -> Result<Checkpoint, NoteError> {
    let parsed = SignedNote::parse(note)?;
    parsed.verify(keys)?;
    Checkpoint::parse_body(&parsed.text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn keypair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "mykey.example/log".into(),
            size: 1234,
            hash: Hash([7u8; 32]),
            time: DateTime::from_timestamp(1_790_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_round_trips() {
        let key = keypair();
        let note = sign(&checkpoint(), &key).unwrap();
        assert!(note.starts_with("mykey.example/log\n1234\nBwcH"));
        assert!(note.contains("\ntime 2026-09-21T"));
        assert!(note.contains("\n\n\u{2014} mykey.example/log "));
        let vkey = verifier_key("mykey.example/log", &key).unwrap();
        let reparsed = VerifierKey::parse(&vkey.to_string()).unwrap();
        assert_eq!(reparsed, vkey);
        assert_eq!(open(&note, &[reparsed]).unwrap(), checkpoint());
    }

    #[test]
    fn the_key_id_is_the_c2sp_one() {
        // Recomputed here by hand from the C2SP text: SHA-256(name || "\n" || 0x01 || key)[:4].
        let key = [9u8; 32];
        let mut input = b"example.com/log\n".to_vec();
        input.push(1);
        input.extend_from_slice(&key);
        let d = Sha256::digest(&input);
        assert_eq!(key_id("example.com/log", &key), d[..4]);
    }

    #[test]
    fn every_alteration_is_refused_with_its_reason() {
        let key = keypair();
        let other = keypair();
        let vkey = verifier_key("mykey.example/log", &key).unwrap();
        let note = sign(&checkpoint(), &key).unwrap();
        // Body edited (size changed): the signature no longer verifies.
        let edited = note.replacen("1234", "1233", 1);
        assert!(matches!(
            open(&edited, std::slice::from_ref(&vkey)),
            Err(NoteError::BadSignature { .. })
        ));
        // Signed by another key under the same name: unknown key id.
        let forged = sign(&checkpoint(), &other).unwrap();
        assert!(matches!(
            open(&forged, std::slice::from_ref(&vkey)),
            Err(NoteError::NoKnownSignature(_))
        ));
        // Malformed notes.
        for (text, why) in [
            ("no blank line\n", "blank line"),
            ("a\n1\nAAAA\n\n\u{2014} a AAAAAAAA\n", "32 bytes"),
            ("a\n01\n\n\u{2014} a AAAAAAAA\n", "decimal"),
            ("a\n1\n\n- a AAAAAAAA\n", "em dash"),
            ("a\u{7}\n1\n\n\u{2014} a AAAAAAAA\n", "control"),
        ] {
            match open(text, std::slice::from_ref(&vkey)) {
                Err(NoteError::Malformed(m)) => assert!(m.contains(why), "{text:?}: {m}"),
                Err(e) if why == "32 bytes" || why == "decimal" => {
                    // The signature fails first for bodies that parse as notes.
                    assert!(matches!(e, NoteError::NoKnownSignature(_)), "{text:?}: {e}");
                    let body = text.split("\n\n").next().unwrap_or_default().to_owned() + "\n";
                    match Checkpoint::parse_body(&body) {
                        Err(NoteError::Malformed(m)) => assert!(m.contains(why), "{m}"),
                        other => panic!("{text:?}: {other:?}"),
                    }
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // Verifier keys.
        assert!(VerifierKey::parse("name+zz+AAAA").is_err());
        let mut wrong_id = vkey.clone();
        wrong_id.id = [0; 4];
        assert!(VerifierKey::parse(&wrong_id.to_string()).is_err());
        assert!(VerifierKey::new("with space", [0; 32]).is_err());
    }

    #[test]
    fn unknown_cosignatures_are_ignored_and_extension_lines_kept_readable() {
        let key = keypair();
        let vkey = verifier_key("mykey.example/log", &key).unwrap();
        let note = sign(&checkpoint(), &key).unwrap();
        let cosigned = format!("{note}\u{2014} witness.example/w1 AAAAAAAAAAAAAAAA\n");
        assert_eq!(open(&cosigned, &[vkey]).unwrap(), checkpoint());
        let with_root = checkpoint().body() + "merkle-root AAAA\n";
        assert_eq!(Checkpoint::parse_body(&with_root).unwrap(), checkpoint());
    }
}
