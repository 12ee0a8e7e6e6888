//! Who a client is: the token it presents, looked up among the configured
//! principals.
//!
//! Tokens are compared as SHA-256 digests in constant time, against every
//! configured token without stopping at the first match, so neither the
//! length nor the content of a token leaks through response timing. The
//! config may hold a token or only its digest (`token_sha256`), so a config
//! file need not contain secrets.
//!
//! Without any token or principal configured, everyone is accepted as the
//! principal `anonymous`, with every data permission.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::permissions::Principal;

/// Why a Hello (or gRPC call) was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Tokens are required and none was presented.
    #[error("this server requires a token")]
    Missing,
    /// The presented token is not one of the configured ones.
    #[error("token not accepted")]
    Rejected,
}

/// The configured tokens (as digests) and client-certificate subjects, and
/// the principal each names.
#[derive(Clone)]
pub struct Auth {
    entries: Vec<([u8; 32], Arc<Principal>)>,
    subjects: Vec<(String, Arc<Principal>)>,
    anonymous: Arc<Principal>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.entries.len())
            .finish()
    }
}

impl Auth {
    /// Auth with these tokens, each a principal with every data
    /// permission (the `auth.tokens` list); none means everyone is accepted.
    pub fn new(tokens: &[String]) -> Auth {
        Auth::with_principals(
            tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    (
                        digest(t),
                        Arc::new(Principal::everything(format!("token-{}", i + 1))),
                    )
                })
                .collect(),
        )
    }

    /// Auth from (token digest, principal) pairs.
    pub fn with_principals(entries: Vec<([u8; 32], Arc<Principal>)>) -> Auth {
        Auth {
            entries,
            subjects: Vec::new(),
            anonymous: Arc::new(Principal::everything("anonymous")),
        }
    }

    /// The principal a verified client certificate names: one whose
    /// `cert_subject` is `CN=<common name>` of the certificate or one of its
    /// subject alternative names. `None` for a certificate naming none (the
    /// client then authenticates by token).
    pub fn for_certificate(&self, der: &[u8]) -> Option<Arc<Principal>> {
        let names = certificate_names(der);
        self.subjects
            .iter()
            .find(|(subject, _)| names.iter().any(|n| n == subject))
            .map(|(_, p)| p.clone())
    }

    /// Auth from a validated config: every `[[principals]]` entry (by
    /// token and/or certificate subject), then every `auth.tokens` entry as
    /// a principal with every data permission.
    pub fn from_config(config: &crate::Config) -> Result<Auth, String> {
        use crate::permissions::Rules;
        let mut entries = Vec::new();
        let mut subjects = Vec::new();
        for p in &config.principals {
            let rules = |r: &crate::config::RulesConfig| {
                Rules::parse(&r.allow, &r.deny, &p.name)
                    .map_err(|e| format!("principal `{}`: {e}", p.name))
            };
            let principal = Arc::new(Principal::new(
                &p.name,
                rules(&p.publish)?,
                rules(&p.subscribe)?,
                p.admin,
            ));
            match (&p.token_sha256, &p.token) {
                (Some(h), _) => {
                    let d = parse_hex(h)
                        .ok_or_else(|| format!("principal `{}`: bad token_sha256", p.name))?;
                    entries.push((d, principal.clone()));
                }
                (None, Some(t)) => entries.push((digest(t), principal.clone())),
                (None, None) => {}
            }
            if let Some(subject) = &p.cert_subject {
                subjects.push((subject.clone(), principal));
            }
        }
        entries.extend(Auth::new(&config.auth.tokens).entries);
        let mut auth = Auth::with_principals(entries);
        auth.subjects = subjects;
        Ok(auth)
    }

    /// The principal named `name`, if any.
    pub fn principal(&self, name: &str) -> Option<Arc<Principal>> {
        if !self.required() {
            return (name == self.anonymous.name()).then(|| self.anonymous.clone());
        }
        self.entries
            .iter()
            .map(|(_, p)| p)
            .chain(self.subjects.iter().map(|(_, p)| p))
            .find(|p| p.name() == name)
            .cloned()
    }

    /// How many tokens and certificate subjects name a principal.
    pub fn len(&self) -> usize {
        self.entries.len() + self.subjects.len()
    }

    /// Whether none is configured (everyone is `anonymous`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a token (or a client certificate) is required.
    pub fn required(&self) -> bool {
        !self.entries.is_empty() || !self.subjects.is_empty()
    }

    /// Whether any principal may call the Admin API with its data token.
    pub fn has_admin_principal(&self) -> bool {
        self.entries.iter().any(|(_, p)| p.is_admin())
    }

    /// The principal of a verified client certificate if it names one, else
    /// of the token ("" = none presented).
    pub fn identify(
        &self,
        certificate: Option<&[u8]>,
        token: &str,
    ) -> Result<Arc<Principal>, AuthError> {
        match certificate.and_then(|der| self.for_certificate(der)) {
            Some(p) => Ok(p),
            None => self.check(token),
        }
    }

    /// The principal of the token a client presented ("" = none).
    pub fn check(&self, presented: &str) -> Result<Arc<Principal>, AuthError> {
        if !self.required() {
            return Ok(self.anonymous.clone());
        }
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        let d = digest(presented);
        let mut found = None;
        for (known, principal) in &self.entries {
            // Every entry is compared; the match is remembered, not acted on.
            if std::hint::black_box(ct_eq(known, &d)) == 1 {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(AuthError::Rejected)
    }
}

/// The [`Auth`] in force, replaceable while the server runs (a reload of
/// `[[principals]]`). Readers take the current one; whoever holds a
/// principal across requests (a connection, a subscription) watches the
/// generation and looks its principal up again after a change.
#[derive(Debug)]
pub struct Directory {
    current: RwLock<Arc<Auth>>,
    /// Read once per batch by every subscription: an atomic, no lock.
    generation: AtomicU64,
    /// Wakes subscriptions that wait for messages.
    changed: watch::Sender<u64>,
}

impl Directory {
    /// A directory holding `auth`.
    pub fn new(auth: Auth) -> Arc<Directory> {
        Arc::new(Directory {
            current: RwLock::new(Arc::new(auth)),
            generation: AtomicU64::new(0),
            changed: watch::Sender::new(0),
        })
    }

    /// The `Auth` in force.
    pub fn current(&self) -> Arc<Auth> {
        // A poisoned lock holds a whole `Arc`: still usable.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `auth` in force and tells every watcher.
    pub fn replace(&self, auth: Auth) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(auth);
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.changed.send_replace(g);
    }

    /// Changes so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A receiver woken by every replacement.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The names a client certificate can match `cert_subject` by:
/// `CN=<common name>` of its subject, then each subject alternative name
/// (DNS name, email, URI, IP address) as written. Empty for a certificate
/// that does not parse (the TLS layer has verified it already, so that
/// means a name form we do not read).
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(|cn| format!("CN={cn}"))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::RFC822Name(n) | GeneralName::URI(n) => {
                    names.push((*n).to_owned())
                }
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    names
}

/// The SHA-256 digest of a token, as `token_sha256` holds it (hex).
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A digest as lowercase hex.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `token_sha256` value back to its digest.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
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
        assert_eq!(a.check("").unwrap().name(), "anonymous");
        assert_eq!(a.check("anything").unwrap().name(), "anonymous");
    }

    #[test]
    fn tokens_are_checked() {
        let a = Auth::new(&["alpha".into(), "beta".into()]);
        assert!(a.required());
        assert_eq!(a.check("alpha").unwrap().name(), "token-1");
        assert_eq!(a.check("beta").unwrap().name(), "token-2");
        assert_eq!(a.check("").unwrap_err(), AuthError::Missing);
        assert_eq!(a.check("alph").unwrap_err(), AuthError::Rejected);
        assert_eq!(a.check("alphaa").unwrap_err(), AuthError::Rejected);
        assert!(!format!("{a:?}").contains("alpha"));
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d = digest("secret");
        assert_eq!(parse_hex(&hex(&d)), Some(d));
        assert_eq!(
            hex(&d),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_hex(&"g".repeat(64)), None);
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
