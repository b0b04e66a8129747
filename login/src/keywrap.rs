//! Encryption at rest of the platform's token-signing private keys.
//!
//! With `MYKEY_KEY_ENCRYPTION_KEY_FILE` set, every private key is stored in `auth_signing_key`
//! sealed with AES-256-GCM under that key-encryption key (KEK), its kid as associated data (a
//! sealed key copied onto another row does not open). A database dump or backup then holds no
//! usable signing key. Every instance must be given the same KEK file; an instance that cannot
//! open a stored key refuses to start rather than minting keys of its own.
//!
//! Stored form: `MAGIC || 12-byte nonce || ciphertext || 16-byte tag`. Rows written without a
//! KEK hold the bare PKCS#8 (DER, first byte 0x30) and are still read, so a KEK can be
//! introduced on a running system; the next rotation writes a sealed key.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::path::Path;

/// Marks a sealed key (a PKCS#8 DER starts with 0x30, never with this).
const MAGIC: &[u8] = b"mykey-kw1";

/// Bytes of a KEK.
pub const KEK_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyWrapError {
    #[error("key-encryption key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("signing key {kid} is sealed but no MYKEY_KEY_ENCRYPTION_KEY_FILE is configured")]
    NoKek { kid: String },
    #[error("signing key {kid} does not open with this key-encryption key: every instance needs the same MYKEY_KEY_ENCRYPTION_KEY_FILE")]
    WrongKek { kid: String },
    #[error("sealing failed")]
    Seal,
}

pub struct KeyWrap {
    key: LessSafeKey,
}

impl std::fmt::Debug for KeyWrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyWrap(<redacted>)")
    }
}

fn file_err(path: &Path, reason: impl Into<String>) -> KeyWrapError {
    KeyWrapError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

impl KeyWrap {
    /// Reads a KEK file: 32 bytes, written by [`KeyWrap::create_file`] as base64 text.
    pub fn from_file(path: &Path) -> Result<KeyWrap, KeyWrapError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
            .map_err(|_| file_err(path, "not base64"))?;
        Self::from_bytes(&bytes)
            .ok_or_else(|| file_err(path, format!("must hold {KEK_BYTES} bytes")))
    }

    fn from_bytes(bytes: &[u8]) -> Option<KeyWrap> {
        if bytes.len() != KEK_BYTES {
            return None;
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(KeyWrap {
            key: LessSafeKey::new(key),
        })
    }

    /// Writes a fresh random KEK to `path` (readable by its owner only); refuses to overwrite.
    pub fn create_file(path: &Path) -> Result<(), KeyWrapError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut kek = [0u8; KEK_BYTES];
        SystemRandom::new()
            .fill(&mut kek)
            .map_err(|_| file_err(path, "no randomness"))?;
        let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, kek);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| file_err(path, e.to_string()))?;
        f.write_all(format!("{text}\n").as_bytes())
            .map_err(|e| file_err(path, e.to_string()))
    }

    /// The stored form of `pkcs8` for the key `kid`.
    pub fn seal(&self, kid: &str, pkcs8: &[u8]) -> Result<Vec<u8>, KeyWrapError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyWrapError::Seal)?;
        let mut sealed = pkcs8.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| KeyWrapError::Seal)?;
        Ok([MAGIC, &nonce, &sealed].concat())
    }
}

/// The PKCS#8 of a stored key: opened with `wrap` when sealed, as is when stored bare.
pub fn open(wrap: Option<&KeyWrap>, kid: &str, stored: &[u8]) -> Result<Vec<u8>, KeyWrapError> {
    let Some(body) = stored.strip_prefix(MAGIC) else {
        return Ok(stored.to_vec());
    };
    let wrap = wrap.ok_or_else(|| KeyWrapError::NoKek {
        kid: kid.to_owned(),
    })?;
    let wrong = || KeyWrapError::WrongKek {
        kid: kid.to_owned(),
    };
    if body.len() < NONCE_LEN {
        return Err(wrong());
    }
    let (nonce, sealed) = body.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
    let mut buf = sealed.to_vec();
    let plain = wrap
        .key
        .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
        .map_err(|_| wrong())?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> KeyWrap {
        KeyWrap::from_bytes(&[byte; KEK_BYTES]).unwrap_or_else(|| panic!("kek"))
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_its_kid() {
        let pkcs8 = b"\x30\x81\x87 a private key".to_vec();
        let sealed = kek(1).seal("kid-a", &pkcs8).unwrap_or_default();
        assert!(sealed.starts_with(MAGIC));
        assert!(
            !sealed.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()),
            "the stored form must not contain the key"
        );
        assert_eq!(
            open(Some(&kek(1)), "kid-a", &sealed).ok(),
            Some(pkcs8.clone())
        );
        assert!(matches!(
            open(Some(&kek(2)), "kid-a", &sealed),
            Err(KeyWrapError::WrongKek { .. })
        ));
        assert!(matches!(
            open(Some(&kek(1)), "kid-b", &sealed),
            Err(KeyWrapError::WrongKek { .. })
        ));
        assert!(matches!(
            open(None, "kid-a", &sealed),
            Err(KeyWrapError::NoKek { .. })
        ));
        let mut flipped = sealed.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        assert!(open(Some(&kek(1)), "kid-a", &flipped).is_err());
        assert!(open(Some(&kek(1)), "kid-a", MAGIC).is_err());
        // Two seals of one key differ (fresh nonce).
        assert_ne!(sealed, kek(1).seal("kid-a", &pkcs8).unwrap_or_default());
    }

    #[test]
    fn a_bare_key_from_before_the_kek_is_read_as_is() {
        let pkcs8 = b"\x30\x81\x87 a private key".to_vec();
        assert_eq!(open(Some(&kek(1)), "k", &pkcs8).ok(), Some(pkcs8.clone()));
        assert_eq!(open(None, "k", &pkcs8).ok(), Some(pkcs8));
    }

    #[test]
    fn a_kek_file_is_created_private_once_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mykey-kek-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join("kek");
        KeyWrap::create_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default();
        assert_eq!(mode, 0o600);
        assert!(
            KeyWrap::create_file(&path).is_err(),
            "never overwrites a KEK"
        );
        let a = KeyWrap::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let sealed = a.seal("k", b"\x30secret").unwrap_or_default();
        let b = KeyWrap::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            open(Some(&b), "k", &sealed).ok(),
            Some(b"\x30secret".to_vec())
        );
        std::fs::write(&path, "c2hvcnQ=\n").unwrap_or_else(|e| panic!("{e}"));
        let err = KeyWrap::from_file(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("32 bytes"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
