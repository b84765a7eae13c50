//! Encryption at rest for secret configuration fields (target credentials, webhook secrets).
//!
//! XChaCha20-Poly1305 with a random 192-bit nonce per value; the key is `VARDO_SECRET_KEY`, base64 of
//! 32 random bytes. A stored value reads `v1:<base64(nonce || ciphertext)>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("VARDO_SECRET_KEY must be the base64 encoding of exactly 32 bytes")]
    BadKey,
    #[error("a stored secret could not be decrypted: wrong VARDO_SECRET_KEY or damaged value")]
    Undecryptable,
}

/// Encrypts and decrypts secret fields. Cheap to clone.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    pub fn from_base64(key: &SecretString) -> Result<Self, SecretError> {
        let raw = B64
            .decode(key.expose_secret().trim())
            .map_err(|_| SecretError::BadKey)?;
        if raw.len() != 32 {
            return Err(SecretError::BadKey);
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&raw).map_err(|_| SecretError::BadKey)?;
        Ok(Self { cipher })
    }

    /// A fresh random key, base64-encoded (for `scripts/run` and tests).
    pub fn generate_key() -> String {
        B64.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub fn encrypt(&self, plain: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for inputs below the AEAD's 256 GiB limit.
        let sealed = self
            .cipher
            .encrypt(&nonce, plain.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn decrypt(&self, stored: &str) -> Result<SecretString, SecretError> {
        let body = stored
            .strip_prefix(PREFIX)
            .ok_or(SecretError::Undecryptable)?;
        let raw = B64.decode(body).map_err(|_| SecretError::Undecryptable)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Undecryptable);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), sealed)
            .map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(plain)
            .map(SecretString::from)
            .map_err(|_| SecretError::Undecryptable)
    }

    /// Encrypts, in place, the named string fields of a JSON object (absent or null fields are left).
    pub fn seal_fields(&self, value: &mut serde_json::Value, fields: &[&str]) {
        for field in fields {
            if let Some(slot) = value.get_mut(*field) {
                if let Some(plain) = slot.as_str() {
                    *slot = serde_json::Value::String(self.encrypt(plain));
                }
            }
        }
    }

    /// Decrypts, in place, the named string fields of a JSON object.
    pub fn open_fields(
        &self,
        value: &mut serde_json::Value,
        fields: &[&str],
    ) -> Result<(), SecretError> {
        for field in fields {
            if let Some(slot) = value.get_mut(*field) {
                if let Some(stored) = slot.as_str() {
                    let plain = self.decrypt(stored)?;
                    *slot = serde_json::Value::String(plain.expose_secret().to_owned());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::from_base64(&SecretString::from(SecretBox::generate_key())).expect("valid key")
    }

    #[test]
    fn round_trips_and_never_stores_plaintext() {
        let sb = boxed();
        let sealed = sb.encrypt("hunter2-secret");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            sb.decrypt(&sealed).expect("decrypts").expose_secret(),
            "hunter2-secret"
        );
        assert_ne!(sealed, sb.encrypt("hunter2-secret"), "nonces are random");
    }

    #[test]
    fn another_key_cannot_decrypt() {
        let sealed = boxed().encrypt("x");
        assert!(matches!(
            boxed().decrypt(&sealed),
            Err(SecretError::Undecryptable)
        ));
    }

    #[test]
    fn rejects_short_keys() {
        let key = SecretString::from(B64.encode([0u8; 16]));
        assert!(matches!(
            SecretBox::from_base64(&key),
            Err(SecretError::BadKey)
        ));
    }

    #[test]
    fn seals_and_opens_json_fields() {
        let sb = boxed();
        let mut v = serde_json::json!({"bucket": "b", "secretAccessKey": "s3cr3t"});
        sb.seal_fields(&mut v, &["secretAccessKey", "absent"]);
        assert_ne!(v["secretAccessKey"], "s3cr3t");
        assert_eq!(v["bucket"], "b");
        sb.open_fields(&mut v, &["secretAccessKey"]).expect("opens");
        assert_eq!(v["secretAccessKey"], "s3cr3t");
    }
}
