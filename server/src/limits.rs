//! Limits a client cannot push the server past, and the typed error each
//! broken limit (or malformed request) becomes on the wire.
//!
//! Every check happens before the input reaches the ring or allocates in
//! proportion to what the client claims: the frame codec rejects an
//! oversize length prefix before buffering it, a Publish is checked against
//! the topic's maximum before it is copied into the ring.

use std::time::Duration;

use lapwing_proto::topic::TopicError;
use lapwing_proto::v1::ErrorCode;

use crate::config::Config;

/// Upper bound for `limits.max_message_bytes`: 64 MiB.
pub const HARD_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Smallest ring a topic may have: 4 KiB (the ring's own minimum).
pub const MIN_RING_BYTES: usize = 4 * 1024;
/// Bytes the server prepends to each stored payload: the publish time.
pub const STORED_PREFIX_BYTES: usize = 8;

/// Limits in force, derived from the config once at start.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest payload of one message (server-wide).
    pub max_message_bytes: usize,
    /// Largest frame on any stream after Welcome.
    pub max_frame_bytes: usize,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Live subscriptions per connection.
    pub max_subscriptions: u32,
    /// Time to send Hello.
    pub hello_timeout: Duration,
}

impl Limits {
    /// Limits from a validated config.
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_message_bytes: config.limits.max_message_bytes,
            max_frame_bytes: lapwing_proto::frame_limit_for(config.limits.max_message_bytes),
            max_connections: config.limits.max_connections,
            max_subscriptions: config.limits.max_subscriptions_per_connection,
            hello_timeout: config.hello_timeout(),
        }
    }
}

/// Why one request of one client was refused. Each variant maps to the
/// [`ErrorCode`] the client receives; the connection and every other client
/// carry on unless the code says otherwise (see [`RequestError::closes_connection`]).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A frame could not be decoded, or came out of order.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A frame's length prefix is over the limit.
    #[error("frame of {len} bytes is over the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Limit.
        max: usize,
    },
    /// A payload is over the topic's maximum.
    #[error("message of {len} bytes is over topic `{topic}`'s maximum of {max}")]
    MessageTooLarge {
        /// Topic.
        topic: String,
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Topic name breaks the naming rules.
    #[error("invalid topic name: {0}")]
    InvalidTopic(#[from] TopicError),
    /// Topic does not exist and auto-creation is off.
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    /// The registry is full.
    #[error("too many topics (limit {0})")]
    TooManyTopics(usize),
    /// Too many live subscriptions on this connection.
    #[error("too many subscriptions on this connection (limit {0})")]
    TooManySubscriptions(u32),
    /// Subscription id in use, or unknown.
    #[error("{0}")]
    InvalidSubscription(String),
    /// Client speaks another protocol version.
    #[error("unsupported protocol version {got}; this server speaks {supported}")]
    UnsupportedVersion {
        /// Client's version.
        got: u32,
        /// Ours.
        supported: u32,
    },
    /// Token missing or not accepted.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A server-side failure; the request may be retried.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RequestError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Protocol(_) => ErrorCode::Protocol,
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Self::InvalidTopic(_) => ErrorCode::InvalidTopic,
            Self::TopicNotFound(_) => ErrorCode::TopicNotFound,
            Self::TooManyTopics(_) => ErrorCode::Internal,
            Self::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            Self::InvalidSubscription(_) => ErrorCode::InvalidSubscription,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether this error ends the connection (the code doubles as the
    /// application close code).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedVersion { .. } | Self::Unauthenticated(_)
        )
    }

    /// The Error message sent to the client.
    pub fn to_wire(&self, subscription_id: u64) -> lapwing_proto::v1::Error {
        lapwing_proto::v1::Error {
            code: self.code() as i32,
            message: self.to_string(),
            subscription_id,
        }
    }
}

impl From<lapwing_proto::frame::FrameError> for RequestError {
    fn from(e: lapwing_proto::frame::FrameError) -> Self {
        use lapwing_proto::frame::FrameError;
        match e {
            FrameError::TooLarge { len, max } => Self::FrameTooLarge { len, max },
            other => Self::Protocol(other.to_string()),
        }
    }
}

impl From<crate::registry::RegistryError> for RequestError {
    fn from(e: crate::registry::RegistryError) -> Self {
        use crate::registry::RegistryError;
        match e {
            RegistryError::InvalidName(e) => Self::InvalidTopic(e),
            RegistryError::NotFound(name) => Self::TopicNotFound(name),
            RegistryError::TooManyTopics(n) => Self::TooManyTopics(n),
            other @ (RegistryError::AlreadyExists(_) | RegistryError::InvalidSettings(_)) => {
                Self::Internal(other.to_string())
            }
        }
    }
}
