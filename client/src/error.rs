//! The client's error type.

use std::path::PathBuf;

use lapwing_proto::pattern::PatternError;
use lapwing_proto::{ErrorCode, FrameError, TopicError};

/// Everything that can go wrong, with the server's [`ErrorCode`] where the
/// server sent one (see [`ClientError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `server` in [`crate::ClientConfig`] is not a `host:port` that
    /// resolves.
    #[error("invalid server address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as configured.
        addr: String,
        /// Why it does not resolve.
        reason: String,
    },
    /// The [`crate::Trust::CaFile`] cannot be read.
    #[error("cannot read trust file {}: {source}", path.display())]
    TrustFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The [`crate::Trust::CaFile`] holds no PEM certificate.
    #[error("no certificate found in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The [`crate::Trust::Fingerprint`] is not a SHA-256 fingerprint.
    #[error(transparent)]
    Fingerprint(#[from] lapwing_proto::fingerprint::FingerprintError),
    /// The TLS configuration could not be built from the trust material.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The client's UDP socket could not be opened.
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    /// The server could not be reached (refused, timed out, TLS failed).
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address as configured.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused or ended something with a typed error.
    #[error("server error {}: {message}", code_name(*.code))]
    Server {
        /// The server's error code ([`ErrorCode::is_retryable`] says whether
        /// trying again can help).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The connection ended (and reconnecting was off or impossible).
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// An acknowledged publish was in flight when the connection broke: it
    /// may or may not have been published.
    #[error(
        "connection lost before the server answered; the publish may or may not have been applied"
    )]
    ConnectionLost,
    /// Fire-and-forget publishes were lost: a write failed (the connection
    /// broke, or there was none), or the server did not confirm a finished
    /// stream. Reported once, by the next `flush`, `finish` or `close`.
    #[error("fire-and-forget publishes were dropped ({bytes} bytes of failed writes): {reason}")]
    PublishesDropped {
        /// Bytes of frames in failed writes (0 when only the confirmation
        /// was missing: some of the stream may not have arrived).
        bytes: usize,
        /// The first failure's description.
        reason: String,
    },
    /// [`crate::ClientConfig::client_name`] is longer than the server keeps.
    #[error("client_name is {len} bytes; the server accepts at most {max}")]
    ClientNameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// [`crate::ClientConfig::MAX_CLIENT_NAME_BYTES`].
        max: usize,
    },
    /// A setting of [`crate::ClientConfig`] is out of range (the text says
    /// which).
    #[error("invalid client config: {0}")]
    InvalidConfig(&'static str),
    /// The server did not answer a `Ping` within
    /// [`crate::ClientConfig::liveness_timeout`]: the connection counts as
    /// dead (the client reconnects and resumes).
    #[error("no answer to a ping within {0:?}")]
    Unresponsive(std::time::Duration),
    /// A topic name breaks the naming rules (checked before sending).
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
    /// A subscription's pattern is malformed (`>` not last, `pri*`;
    /// checked before sending). A token that breaks the naming rules is
    /// [`ClientError::InvalidTopic`].
    #[error(transparent)]
    InvalidPattern(PatternError),
    /// A payload is over the server's limit (from Welcome; checked before
    /// sending).
    #[error("message of {len} bytes is over the server's limit of {max} bytes")]
    MessageTooLarge {
        /// The payload's length.
        len: usize,
        /// [`crate::Client::max_message_bytes`].
        max: usize,
    },
    /// A frame from the server could not be read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The server sent something the protocol does not allow.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// A step did not finish in time (the text says which).
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The client was closed (or has given up), so the call cannot run.
    #[error("the client is closed")]
    Closed,
}

impl From<PatternError> for ClientError {
    fn from(e: PatternError) -> Self {
        match e {
            PatternError::Topic(e) => ClientError::InvalidTopic(e),
            other => ClientError::InvalidPattern(other),
        }
    }
}

impl ClientError {
    /// The server's error code, if the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Connection(quinn::ConnectionError::ApplicationClosed(close)) => {
                ErrorCode::from_close_code(close.error_code.into_inner())
            }
            _ => None,
        }
    }

    pub(crate) fn server(e: lapwing_proto::v1::Error) -> Self {
        ClientError::Server {
            code: e.code(),
            message: e.message,
        }
    }
}

/// `MESSAGE_TOO_LARGE` rather than `ErrorCode::MessageTooLarge`.
pub fn code_name(code: ErrorCode) -> &'static str {
    code.as_str_name()
        .strip_prefix("ERROR_CODE_")
        .unwrap_or(code.as_str_name())
}
