//! Stored passwords: in clear (simple configurations) or as RabbitMQ's
//! salted SHA-256 hash (`rabbit_password_hashing_sha256`), so hashes taken
//! from a RabbitMQ definitions export work unchanged.

use sha2::{Digest, Sha256};

/// How a user's password is kept.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// The password itself.
    Plain(String),
    /// RabbitMQ's format: base64 of a 4-byte salt followed by
    /// SHA-256(salt ++ password).
    Sha256 {
        /// The salt.
        salt: [u8; 4],
        /// The digest.
        digest: [u8; 32],
    },
}

impl std::fmt::Debug for Password {
    /// Never prints the password or its hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Plain(_) => f.write_str("Plain(<redacted>)"),
            Password::Sha256 { .. } => f.write_str("Sha256(<redacted>)"),
        }
    }
}

impl Password {
    /// Parses a RabbitMQ `password_hash` (base64, 36 bytes decoded).
    pub fn from_rabbitmq_hash(b64: &str) -> Option<Password> {
        let raw = base64_decode(b64.trim())?;
        if raw.len() != 36 {
            return None;
        }
        let mut salt = [0; 4];
        salt.copy_from_slice(&raw[..4]);
        let mut digest = [0; 32];
        digest.copy_from_slice(&raw[4..]);
        Some(Password::Sha256 { salt, digest })
    }

    /// Hashes `password` with `salt` in RabbitMQ's format.
    pub fn hash(password: &str, salt: [u8; 4]) -> Password {
        let digest = Sha256::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize();
        Password::Sha256 {
            salt,
            digest: digest.into(),
        }
    }

    /// The password as it is kept: one in clear hashed with a fresh random
    /// salt, a hash as it is.
    pub fn hashed(self) -> Password {
        match self {
            Password::Plain(text) => Password::hash(&text, random_salt()),
            hashed => hashed,
        }
    }

    /// The RabbitMQ `password_hash` text for a hashed password.
    pub fn to_rabbitmq_hash(&self) -> Option<String> {
        match self {
            Password::Plain(_) => None,
            Password::Sha256 { salt, digest } => {
                let mut raw = salt.to_vec();
                raw.extend_from_slice(digest);
                Some(base64_encode(&raw))
            }
        }
    }

    /// Whether `attempt` is the password, compared in constant time.
    pub fn matches(&self, attempt: &[u8]) -> bool {
        match self {
            Password::Plain(p) => constant_time_eq(p.as_bytes(), attempt),
            Password::Sha256 { salt, digest } => {
                let d = Sha256::new()
                    .chain_update(salt)
                    .chain_update(attempt)
                    .finalize();
                constant_time_eq(&d, digest)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Four random bytes for a salt. A salt must be unique, not secret: the
/// keys std draws for each `RandomState` will do.
pub fn random_salt() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0x5a);
    let v = h.finish().to_le_bytes();
    [v[0], v[1], v[2], v[3]]
}

/// Standard base64 with padding.
pub fn base64_encode(raw: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Standard base64 (padding optional); `None` on a character outside the
/// alphabet.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for n in 0..40 {
            let raw: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&raw)).unwrap(), raw);
        }
        assert_eq!(base64_encode(b"Man"), "TWFu");
        assert_eq!(base64_encode(b"Ma"), "TWE=");
    }

    #[test]
    fn rabbitmq_hashes_verify() {
        let p = Password::hash("s3cret", [1, 2, 3, 4]);
        let text = p.to_rabbitmq_hash().unwrap();
        let parsed = Password::from_rabbitmq_hash(&text).unwrap();
        assert!(parsed.matches(b"s3cret"));
        assert!(!parsed.matches(b"s3cres"));
        assert!(Password::from_rabbitmq_hash("not base64!").is_none());
        assert!(Password::from_rabbitmq_hash("AAAA").is_none());
        assert!(!format!("{parsed:?}").contains(&text));
    }

    #[test]
    fn known_vector() {
        // SHA-256 of the 4 salt bytes 0x00 followed by "guest", computed independently.
        let p = Password::hash("guest", [0, 0, 0, 0]);
        let Password::Sha256 { digest, .. } = p else {
            panic!()
        };
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let expected = {
            let d = Sha256::digest([0u8, 0, 0, 0, b'g', b'u', b'e', b's', b't']);
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(hex, expected);
    }
}
