//! Secrets kept as salted SHA-256 — checkable, never recoverable — and the
//! machine's random bytes they are salted with. Workspace keys, write keys
//! and API tokens are all stored this way and never shown again.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `N` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

/// A secret kept as salted SHA-256: checkable, never recoverable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    salt: [u8; 16],
    hash: [u8; 32],
}

impl Secret {
    fn digest(salt: &[u8; 16], key: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(key.as_bytes());
        h.finalize().into()
    }

    /// Hashes `key` with a fresh random salt.
    pub fn new(key: &str) -> std::io::Result<Secret> {
        let salt = random_bytes()?;
        Ok(Secret {
            hash: Self::digest(&salt, key),
            salt,
        })
    }

    /// Whether `key` is the secret (compared in constant time).
    pub fn matches(&self, key: &str) -> bool {
        let h = Self::digest(&self.salt, key);
        h.iter()
            .zip(self.hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_check_without_being_recoverable() {
        let s = Secret::new("data-api-key-1").unwrap();
        assert!(s.matches("data-api-key-1"));
        assert!(!s.matches("data-api-key-2"));
        assert!(!s.matches(""));
        let t = Secret::new("data-api-key-1").unwrap();
        assert_ne!(s, t, "salted: the same key hashes differently");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("data-api-key"));
    }
}
