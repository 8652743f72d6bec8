//! The cluster secret: every RPC carries it as `Authorization: Bearer <secret>`, and a node
//! that has one answers 401 to a request without it, before reading the request's body.

use std::path::Path;
use std::sync::Arc;

use hyper::header::HeaderValue;

/// Fewest bytes a secret may have (a generated one has 64 hex digits).
pub const MIN_SECRET_BYTES: usize = 16;

/// A shared secret. Cheap to clone; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The secret itself.
    text: Arc<str>,
    /// `Bearer <text>`, made once: every RPC sends it.
    header: HeaderValue,
}

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable secret.
    #[error("the secret file {path} {why}")]
    Unusable {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from `text` (surrounding whitespace, a trailing newline included, is not part of
    /// it): at least [`MIN_SECRET_BYTES`] visible ASCII characters, as a header can carry.
    pub fn new(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "holds {} characters; a secret needs at least {MIN_SECRET_BYTES}",
                text.len()
            ));
        }
        let refused = || "holds characters other than visible ASCII (no spaces)".to_string();
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refused());
        }
        let header = HeaderValue::from_str(&format!("Bearer {text}")).map_err(|_| refused())?;
        Ok(Secret {
            text: text.into(),
            header,
        })
    }

    /// The secret in the file at `path`.
    pub fn load(path: &Path) -> Result<Secret, SecretError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: shown.clone(),
            source,
        })?;
        Secret::new(&text).map_err(|why| SecretError::Unusable { path: shown, why })
    }

    /// A new random secret: 32 random bytes as 64 hex digits.
    pub fn generate() -> Secret {
        let bytes: [u8; 32] = rand::random();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Secret::new(&text).unwrap_or_else(|why| unreachable!("64 hex digits are a secret: {why}"))
    }

    /// The secret's text, to write into a file.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The `Authorization` header value that proves it.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether an `Authorization` header value proves this secret, compared in constant time
    /// (so the time to refuse says nothing of how much of a guess was right).
    pub fn admits(&self, header: Option<&[u8]>) -> bool {
        header
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .is_some_and(|token| self.matches(token))
    }

    /// Whether `password` is this secret (Redis's `AUTH`), compared in constant time.
    pub fn matches(&self, password: &[u8]) -> bool {
        constant_time_eq::constant_time_eq(password, self.text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let secret = Secret::new("0123456789abcdef-secret\n").expect("a secret");
        assert!(secret.admits(Some(secret.header().as_bytes())));
        assert!(!secret.admits(None));
        assert!(!secret.admits(Some(b"Bearer 0123456789abcdef-secre")));
        assert!(!secret.admits(Some(b"Bearer 0123456789abcdef-secret2")));
        assert!(!secret.admits(Some(b"0123456789abcdef-secret")));
        assert!(!secret.admits(Some(b"Basic 0123456789abcdef-secret")));
    }

    #[test]
    fn short_or_unprintable_secrets_are_refused_and_generated_ones_are_fine() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("has a space in the middle").is_err());
        let generated = Secret::generate();
        assert_eq!(Secret::new(generated.expose()), Ok(generated.clone()));
        assert_ne!(generated, Secret::generate());
        assert_eq!(format!("{generated:?}"), "Secret(..)");
    }
}
