//! Token authentication of data connections.
//!
//! Tokens are compared as SHA-256 digests in constant time, against every
//! configured token without stopping at the first match, so neither the
//! length nor the content of a token leaks through response timing.

use sha2::{Digest, Sha256};

/// Why a Hello was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Tokens are required and none was presented.
    #[error("this server requires a token")]
    Missing,
    /// The presented token is not one of the configured ones.
    #[error("token not accepted")]
    Rejected,
}

/// The configured tokens (as digests).
#[derive(Clone)]
pub struct Auth {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.digests.len())
            .finish()
    }
}

impl Auth {
    /// Auth with these tokens; none means everyone is accepted.
    pub fn new(tokens: &[String]) -> Auth {
        Auth {
            digests: tokens.iter().map(|t| digest(t)).collect(),
        }
    }

    /// Whether a token is required.
    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Checks the token a client presented ("" = none).
    pub fn check(&self, presented: &str) -> Result<(), AuthError> {
        if !self.required() {
            return Ok(());
        }
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        let d = digest(presented);
        let mut matched = 0u8;
        for known in &self.digests {
            matched |= ct_eq(known, &d);
        }
        if std::hint::black_box(matched) == 1 {
            Ok(())
        } else {
            Err(AuthError::Rejected)
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 1 if equal, 0 if not; time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Maps 0 -> 1 and anything else -> 0 without a branch.
    (((u16::from(diff)).wrapping_sub(1) >> 8) & 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_tokens_accepts_everyone() {
        let a = Auth::new(&[]);
        assert!(!a.required());
        assert_eq!(a.check(""), Ok(()));
        assert_eq!(a.check("anything"), Ok(()));
    }

    #[test]
    fn tokens_are_checked() {
        let a = Auth::new(&["alpha".into(), "beta".into()]);
        assert!(a.required());
        assert_eq!(a.check("alpha"), Ok(()));
        assert_eq!(a.check("beta"), Ok(()));
        assert_eq!(a.check(""), Err(AuthError::Missing));
        assert_eq!(a.check("alph"), Err(AuthError::Rejected));
        assert_eq!(a.check("alphaa"), Err(AuthError::Rejected));
        assert!(!format!("{a:?}").contains("alpha"));
    }

    #[test]
    fn ct_eq_is_equality() {
        let x = [7u8; 32];
        let mut y = x;
        assert_eq!(ct_eq(&x, &y), 1);
        y[31] ^= 0x80;
        assert_eq!(ct_eq(&x, &y), 0);
    }
}
