//! Why one request of one client was refused, and the one table that turns
//! each reason into the [`ErrorCode`] the client receives.
//!
//! Both edges and the Admin API produce a [`RequestError`]; each edge only
//! wraps [`RequestError::code`] in its carrier (QUIC: an Error frame or an
//! application close code; gRPC: a status with the code in
//! `lapwing-error-code` metadata, see `edge::grpc::status`). Whether an
//! error ends the connection, and whether retrying can help, is a property
//! of the code, decided once in `lapwing_proto` (`ErrorCode::closes_connection`,
//! `ErrorCode::is_retryable`).

use lapwing_proto::frame::FrameError;
use lapwing_proto::pattern::PatternError;
use lapwing_proto::topic::TopicError;
use lapwing_proto::v1::ErrorCode;

use crate::registry::RegistryError;

/// A server-wide budget that is used up. Never retryable as is: the
/// message names the limit, so an operator knows which key to raise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// `limits.ring_memory_bytes`: a new ring would not fit.
    #[error("ring memory budget of {limit} bytes is used up (limits.ring_memory_bytes); a new topic's ring needs {needed} bytes")]
    RingMemory {
        /// The budget.
        limit: usize,
        /// What the refused ring needs.
        needed: usize,
    },
    /// `limits.max_topics`.
    #[error("the server holds its maximum of {limit} topics (limits.max_topics)")]
    Topics {
        /// The cap.
        limit: usize,
    },
    /// `limits.topics_created_per_connection`.
    #[error("this connection created its quota of {limit} topics (limits.topics_created_per_connection)")]
    TopicQuota {
        /// The quota.
        limit: u32,
    },
    /// `limits.max_publish_streams_per_connection` on gRPC (QUIC's stream
    /// credit enforces it there).
    #[error("this connection has its maximum of {limit} publish streams open (limits.max_publish_streams_per_connection)")]
    PublishStreams {
        /// The cap.
        limit: u32,
    },
    /// `limits.max_topics_per_wildcard`: a wildcard subscription would
    /// follow more topics.
    #[error("a wildcard subscription may follow at most {limit} topics (limits.max_topics_per_wildcard): subscribe to a narrower pattern")]
    WildcardTopics {
        /// The cap.
        limit: u32,
    },
    /// `limits.partial_frame_bytes`: too many bytes are held for frames
    /// that have started arriving and are not complete yet.
    #[error("the server holds its maximum of {limit} bytes of partial frames (limits.partial_frame_bytes)")]
    PartialFrames {
        /// The budget.
        limit: usize,
    },
}

/// See the module docs.
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
    /// A subscribe pattern is malformed (`>` not last, `pri*`).
    #[error("{0}")]
    InvalidPattern(PatternError),
    /// Topic does not exist and auto-creation is off.
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    /// The topic was deleted (by an operator, or reaped) while subscribed.
    #[error("topic `{0}` was deleted")]
    TopicDeleted(String),
    /// Admin create of a name that exists.
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    /// An argument out of its range (Admin).
    #[error("{0}")]
    InvalidArgument(String),
    /// Too many live subscriptions on this connection.
    #[error("too many subscriptions on this connection (limit {0})")]
    TooManySubscriptions(u32),
    /// The server holds `limits.max_connections` connections (both edges).
    #[error("the server is at its limit of {0} connections; retry later")]
    TooManyConnections(usize),
    /// A server-wide budget is used up.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
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
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// A principal's rules refuse this action on this topic.
    #[error("permission denied: principal `{principal}` may not {action} `{topic}`")]
    Forbidden {
        /// The principal's name.
        principal: String,
        /// `publish` or `subscribe`.
        action: &'static str,
        /// The topic or pattern.
        topic: String,
    },
    /// A deadline passed (handshake, Hello, a frame in progress).
    #[error("{0}")]
    Timeout(String),
    /// The subscription lagged and its policy is disconnect.
    #[error(
        "subscription lagged ({missed} messages overwritten) and its lag policy is disconnect"
    )]
    Lagged {
        /// Messages overwritten.
        missed: u64,
    },
    /// The server is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
    /// A server-side failure; the request may be retried.
    #[error("internal error: {0}")]
    Internal(String),
    /// Cluster mode: the backbone is unreachable or the topic is not ready
    /// on this node; retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl RequestError {
    /// The wire code: the one table of the module docs.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Protocol(_) => ErrorCode::Protocol,
            Self::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Self::InvalidTopic(_) | Self::InvalidPattern(_) => ErrorCode::InvalidTopic,
            Self::TopicNotFound(_) | Self::TopicDeleted(_) => ErrorCode::TopicNotFound,
            Self::TopicExists(_) => ErrorCode::TopicExists,
            Self::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Self::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            Self::TooManyConnections(_) => ErrorCode::TooManyConnections,
            Self::Exhausted(_) => ErrorCode::ResourceExhausted,
            Self::InvalidSubscription(_) => ErrorCode::InvalidSubscription,
            Self::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) | Self::Forbidden { .. } => ErrorCode::PermissionDenied,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Lagged { .. } => ErrorCode::Lagged,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Internal(_) => ErrorCode::Internal,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
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

impl From<FrameError> for RequestError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => Self::FrameTooLarge { len, max },
            other => Self::Protocol(other.to_string()),
        }
    }
}

impl From<PatternError> for RequestError {
    fn from(e: PatternError) -> Self {
        match e {
            PatternError::Topic(e) => Self::InvalidTopic(e),
            other => Self::InvalidPattern(other),
        }
    }
}

impl From<RegistryError> for RequestError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::InvalidName(e) => Self::InvalidTopic(e),
            RegistryError::NotFound(name) => Self::TopicNotFound(name),
            RegistryError::AlreadyExists(name) => Self::TopicExists(name),
            RegistryError::InvalidSettings(why) => Self::InvalidArgument(why),
            RegistryError::Exhausted(e) => Self::Exhausted(e),
            RegistryError::NotReady(name) => Self::Unavailable(format!(
                "topic `{name}` is served through the backbone and is not ready on this node; retry"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_resource_exhausted_and_not_retryable() {
        let errors = [
            RequestError::from(RegistryError::Exhausted(Exhausted::Topics { limit: 2 })),
            Exhausted::RingMemory {
                limit: 1 << 30,
                needed: 4 << 20,
            }
            .into(),
            Exhausted::TopicQuota { limit: 10 }.into(),
            Exhausted::PartialFrames { limit: 1 << 26 }.into(),
        ];
        for e in errors {
            assert_eq!(e.code(), ErrorCode::ResourceExhausted, "{e}");
            assert!(!e.code().is_retryable(), "{e}");
            assert!(e.to_string().contains("limits."), "names its key: {e}");
        }
        assert!(RequestError::TooManyConnections(5).code().is_retryable());
    }
}
