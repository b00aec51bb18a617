//! Secrets at rest (consumers' notification tokens): sealed with XChaCha20-Poly1305 under a key
//! kept in a file beside the database (`<db>.key`, mode 0600), so that a dump of the database
//! alone does not reveal them. Values written before sealing existed read back as they are.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::domain::SealedSecret;

const PREFIX: &str = "sealed1:";

pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    key: Vec<u8>,
}

impl SecretBox {
    /// Reads the key, creating it (32 random bytes, hex, owner-only) on first use where it is
    /// kept beside the database.
    pub fn load(file: &crate::store::KeyFile) -> anyhow::Result<Self> {
        let key = file.load("the key that seals stored secrets; back it up with the database")?;
        Ok(Self {
            cipher: XChaCha20Poly1305::new_from_slice(&key)
                .map_err(|_| anyhow::anyhow!("the secret key must be 32 bytes"))?,
            key,
        })
    }

    /// A key for another purpose derived from this one (HMAC-SHA256 of the purpose), so that
    /// one key file serves both without using the same key twice.
    pub fn derive(&self, purpose: &str) -> Vec<u8> {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    pub fn seal(&self, clear: &str) -> SealedSecret {
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), clear.as_bytes())
            .expect("encryption of an in-memory buffer cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        SealedSecret(format!("{PREFIX}{}", encode_hex(&bytes)))
    }

    pub fn open(&self, sealed: &SealedSecret) -> anyhow::Result<String> {
        let Some(hex) = sealed.0.strip_prefix(PREFIX) else {
            // Stored before secrets were sealed.
            return Ok(sealed.0.clone());
        };
        let bytes = decode_hex(hex).context("sealed secret is not hex")?;
        anyhow::ensure!(bytes.len() > 24, "sealed secret too short");
        let (nonce, body) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into()?;
        let clear = self
            .cipher
            .decrypt(&XNonce::from(nonce), body)
            .map_err(|_| anyhow::anyhow!("sealed secret does not open with this key"))?;
        Ok(String::from_utf8(clear)?)
    }
}

/// Writes a new random 32-byte key (hex, owner-only) to `path`, which must not exist.
pub fn generate_key_file(path: &Path) -> anyhow::Result<()> {
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    write_private(path, &encode_hex(&key))
}

/// A 32-byte key kept in a file (hex, owner-only), created with random bytes on first use;
/// `purpose` says in the log what was created.
pub fn key_file(path: &Path, purpose: &str) -> anyhow::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) => decode_hex(text.trim())
            .filter(|k| k.len() == 32)
            .with_context(|| format!("{} is not a 32-byte hex key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = vec![0u8; 32];
            rand::rng().fill_bytes(&mut key);
            write_private(path, &encode_hex(&key))?;
            tracing::info!(path = %path.display(), "created {purpose}");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_their_key_only_and_legacy_values_pass_through() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load(&crate::store::KeyFile::BesideDatabase(
            dir.path().join("a.key"),
        ))
        .unwrap();
        let b = SecretBox::load(&crate::store::KeyFile::BesideDatabase(
            dir.path().join("b.key"),
        ))
        .unwrap();
        let sealed = a.seal("c8974e592c2fa383d4a3960714");
        assert!(!sealed.0.contains("c8974e592c2fa383d4a3960714"));
        assert_eq!(a.open(&sealed).unwrap(), "c8974e592c2fa383d4a3960714");
        assert!(b.open(&sealed).is_err());
        assert_ne!(a.seal("x").0, a.seal("x").0, "a fresh nonce each time");
        assert_eq!(a.open(&SealedSecret("plain".into())).unwrap(), "plain");
        // The same file gives the same key.
        let again = SecretBox::load(&crate::store::KeyFile::BesideDatabase(
            dir.path().join("a.key"),
        ))
        .unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "c8974e592c2fa383d4a3960714");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("a.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
