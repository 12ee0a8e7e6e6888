//! The client's error type.

use std::path::PathBuf;

use lapwing_proto::{ErrorCode, FrameError, TopicError};

/// Everything that can go wrong, with the server's [`ErrorCode`] where the
/// server sent one (see [`ClientError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: String },
    #[error("cannot read trust file {}: {source}", path.display())]
    TrustFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error(transparent)]
    Fingerprint(#[from] lapwing_proto::fingerprint::FingerprintError),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The server refused or ended something with a typed error.
    #[error("server error {}: {message}", code_name(*.code))]
    Server { code: ErrorCode, message: String },
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
    /// stream. `bytes` counts the frames of failed writes (0 when only the
    /// confirmation was missing: some of the stream may not have arrived).
    #[error("fire-and-forget publishes were dropped ({bytes} bytes of failed writes): {reason}")]
    PublishesDropped { bytes: usize, reason: String },
    /// [`crate::ClientConfig::client_name`] is longer than the server keeps.
    #[error("client_name is {len} bytes; the server accepts at most {max}")]
    ClientNameTooLong { len: usize, max: usize },
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
    #[error("message of {len} bytes is over the server's limit of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the client is closed")]
    Closed,
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
