//! How to reach and trust a server.

use std::path::PathBuf;
use std::time::Duration;

use lapwing_proto::defaults;

use crate::{BufferOverflow, ClientError};

/// How the client decides that it talks to the right server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A PEM file with CA certificates, or the server's own self-signed
    /// certificate. Normal verification, including the server name.
    CaFile(PathBuf),
    /// The SHA-256 fingerprint of the server's leaf certificate (hex, any
    /// case, `:` separators allowed). Exactly that certificate is accepted,
    /// whatever its names and validity dates.
    Fingerprint(String),
    /// Accept any certificate. Development only: anyone on the path can
    /// impersonate the server.
    Insecure,
}

/// A client certificate and its key (PEM files), for servers that name
/// principals by certificate (mTLS, the server's `tls.client_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key of the leaf.
    pub key: std::path::PathBuf,
}

/// Everything [`crate::Client::connect`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the server's QUIC edge; in cluster mode, several,
    /// comma-separated (`a:7400,b:7400,c:7400`): the client connects to the
    /// first, and each failed attempt, and each reconnect after a lost
    /// connection, goes to the next one, where every subscription resumes
    /// exactly (the nodes number messages alike). All must present a
    /// certificate that [`ClientConfig::trust`] accepts for `server_name`.
    pub server: String,
    /// Name verified in the server's certificate (with [`Trust::CaFile`]).
    pub server_name: String,
    /// How the server's certificate is checked.
    pub trust: Trust,
    /// Auth token sent in `Hello`; `None` when the server requires none.
    pub token: Option<String>,
    /// A client certificate to present in the TLS handshake; a server with
    /// `tls.client_ca` then knows the client's principal without a token.
    pub client_certificate: Option<ClientCertificate>,
    /// Shown in the server's logs and admin API. At most
    /// [`ClientConfig::MAX_CLIENT_NAME_BYTES`] bytes: a longer name is
    /// refused (not trimmed) by [`ClientConfig::validate`], so the name an
    /// operator sees is always the one that was configured.
    pub client_name: String,
    /// Reconnect after a lost connection and resume every subscription.
    pub reconnect: bool,
    /// QUIC flow-control window per subscription stream. Together with the
    /// per-subscription event buffer it bounds how far a slow consumer can
    /// fall behind before the server's ring laps it (and it gets a resync).
    /// It is also what the server may buffer per subscription stream: 256 KiB
    /// is thousands of small messages in flight (plenty on a LAN) and keeps a
    /// server with thousands of subscribers in bounded memory.
    pub stream_receive_window: u32,
    /// Events a subscription buffers for a consumer that has not asked for
    /// them yet. Large for throughput and bursts; small for a consumer that
    /// reads slowly on purpose, so what it reads after a lap is close to the
    /// head (with [`BufferOverflow::LapOldest`] it hears of the lap about
    /// half a second after the buffer filled either way). An emptied buffer
    /// gives back what a burst made it allocate.
    pub subscription_buffer_events: usize,
    /// What a full buffer of a one-topic subscription does: after half a
    /// second, lap its oldest messages into an exact resync the consumer
    /// reads next (the default, so a slow consumer hears of its lag within
    /// about a second and reads recent messages), or push back on the
    /// stream for as long as it takes, so the server's ring laps it instead.
    /// Wildcard subscriptions always push back.
    pub buffer_overflow: BufferOverflow,
    /// Limit on the first connect (TLS + Hello/Welcome).
    pub connect_timeout: Duration,
    /// Longest wait between two reconnect attempts.
    pub max_backoff: Duration,
    /// How long a `Ping` on the control stream may go unanswered before the
    /// connection counts as dead (`None`: no liveness check, only QUIC's
    /// 10 s idle timeout). The driver pings every half of it. A dead
    /// connection is closed and the client reconnects and resumes; each
    /// reconnect attempt is then also bounded by it (and by
    /// `connect_timeout`), and an attempt that timed out is followed by
    /// another after about 100 ms rather than a growing backoff, so that one
    /// succeeds soon after a partition heals. quinn backs its own probes off
    /// exponentially (a connection that survives a 5 s partition resumed
    /// about 7.6 s after the heal); with the default of 2 s, delivery resumed
    /// within about a second of the heal (`e2e/tests/faults.rs`). Raise it
    /// for paths with round trips near a second or a client that may stall
    /// for that long; too low a value costs reconnects (each resumes
    /// exactly, so it is never a loss).
    pub liveness_timeout: Option<Duration>,
}

impl ClientConfig {
    /// The longest `client_name` the server keeps (it caps the name it
    /// receives in `Hello` at this many bytes).
    pub const MAX_CLIENT_NAME_BYTES: usize = 256;

    /// A config with the defaults: server name `localhost`, no token,
    /// reconnect on, 256 KiB stream window, 4096-event subscription buffer,
    /// a 2 s liveness timeout.
    pub fn new(server: impl Into<String>, trust: Trust) -> Self {
        Self {
            server: server.into(),
            server_name: defaults::SERVER_NAME.to_owned(),
            trust,
            token: None,
            client_name: format!("lapwing-client/{}", env!("CARGO_PKG_VERSION")),
            reconnect: true,
            stream_receive_window: 256 * 1024,
            subscription_buffer_events: 4096,
            buffer_overflow: BufferOverflow::LapOldest,
            connect_timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
            liveness_timeout: Some(Duration::from_secs(2)),
            client_certificate: None,
        }
    }

    /// Checks what can be checked before connecting; [`crate::Client::connect`]
    /// calls it first. Fails with [`ClientError::ClientNameTooLong`] for a
    /// `client_name` over [`ClientConfig::MAX_CLIENT_NAME_BYTES`], and with
    /// [`ClientError::InvalidConfig`] for a zero `liveness_timeout`.
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.liveness_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ClientError::InvalidConfig(
                "liveness_timeout must be above zero (None turns the check off)",
            ));
        }
        if self.client_name.len() > Self::MAX_CLIENT_NAME_BYTES {
            return Err(ClientError::ClientNameTooLong {
                len: self.client_name.len(),
                max: Self::MAX_CLIENT_NAME_BYTES,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_name_over_the_cap_is_refused_not_trimmed() {
        let mut cfg = ClientConfig::new("127.0.0.1:7400", Trust::Insecure);
        cfg.client_name = "n".repeat(ClientConfig::MAX_CLIENT_NAME_BYTES);
        cfg.validate().unwrap();
        cfg.client_name.push('n');
        let err = cfg.validate().unwrap_err();
        assert!(
            matches!(err, ClientError::ClientNameTooLong { len: 257, max: 256 }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "client_name is 257 bytes; the server accepts at most 256"
        );
    }
}
