//! Sealing of secrets kept at rest (TLS private keys): AES-256-GCM with a server-wide key.
//!
//! The sealed form is text so that it can live inside a configuration's JSON content:
//! `enc:v1:` followed by standard base64 of `nonce (12 bytes) || ciphertext+tag`. The
//! version tag leaves room for a future key rotation or algorithm change.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const SEALED_PREFIX: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

/// Why a key could not be loaded or a sealed value could not be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The key is not base64 of exactly 32 bytes.
    #[error("invalid secret key: expected base64 of 32 bytes")]
    InvalidKey,
    /// The value does not have the `enc:v1:<base64>` shape.
    #[error("not a sealed value")]
    Malformed,
    /// Authentication failed: wrong key, or the value was altered.
    #[error("sealed value could not be opened (wrong key or tampered data)")]
    Tampered,
}

/// Symmetric sealing of short secrets (AES-256-GCM, random 96-bit nonce per seal).
#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

// The key must never reach logs, so Debug shows nothing of it.
impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox { .. }")
    }
}

impl SecretBox {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// A box from the base64 text of a 32-byte key, as given in the config file or env.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SecretError::InvalidKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretError::InvalidKey)?;
        Ok(Self::new(key))
    }

    /// Encrypts `plaintext`; every call uses a fresh nonce, so equal inputs seal differently.
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = Nonce::from_slice(&nonce_bytes);
        // Encryption with a valid key and an in-memory buffer fails only past GCM's
        // 64 GiB message limit, far beyond anything a configuration can hold.
        let ciphertext = self
            .cipher
            .encrypt(nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce_bytes);
        sealed.extend_from_slice(&ciphertext);
        format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed))
    }

    /// Decrypts a value made by [`SecretBox::seal`] with the same key.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(SecretError::Malformed)?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::Malformed)?;
        if bytes.len() < NONCE_LEN {
            return Err(SecretError::Malformed);
        }
        let (nonce_bytes, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce_bytes), ciphertext)
            .map_err(|_| SecretError::Tampered)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::Tampered)
    }

    /// Whether `text` has the sealed shape (it says nothing about which key sealed it).
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretBox {
        SecretBox::new([byte; 32])
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let sealer = key(7);
        let first = sealer.seal("-----BEGIN PRIVATE KEY-----\nabc");
        let second = sealer.seal("-----BEGIN PRIVATE KEY-----\nabc");
        assert!(SecretBox::is_sealed(&first));
        assert_ne!(first, second, "a nonce must never be reused");
        assert_eq!(
            sealer.open(&first).as_deref(),
            Ok("-----BEGIN PRIVATE KEY-----\nabc")
        );
        assert_eq!(sealer.open(&sealer.seal("")).as_deref(), Ok(""));
    }

    #[test]
    fn tampering_is_detected() {
        let sealer = key(7);
        let sealed = sealer.seal("secret");
        let mut bytes = STANDARD
            .decode(sealed.strip_prefix(SEALED_PREFIX).unwrap())
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = format!("{SEALED_PREFIX}{}", STANDARD.encode(bytes));
        assert_eq!(sealer.open(&altered), Err(SecretError::Tampered));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let sealed = key(1).seal("secret");
        assert_eq!(key(2).open(&sealed), Err(SecretError::Tampered));
    }

    #[test]
    fn malformed_values_are_rejected() {
        let sealer = key(1);
        for text in ["secret", "enc:v1:", "enc:v1:!!!", "enc:v1:AAAA"] {
            assert_eq!(sealer.open(text), Err(SecretError::Malformed), "{text}");
        }
        assert!(!SecretBox::is_sealed("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn keys_load_from_base64() {
        let text = STANDARD.encode([9u8; 32]);
        let sealer = SecretBox::from_base64(&text).unwrap();
        assert_eq!(key(9).open(&sealer.seal("x")).as_deref(), Ok("x"));
        assert_eq!(
            SecretBox::from_base64("c2hvcnQ=").err(),
            Some(SecretError::InvalidKey)
        );
        assert_eq!(
            SecretBox::from_base64("not base64").err(),
            Some(SecretError::InvalidKey)
        );
        assert!(!format!("{sealer:?}").contains('9'));
    }
}
