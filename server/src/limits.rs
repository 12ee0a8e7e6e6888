//! The limits in force, derived from the config once at start, in the form
//! the edges and the session layer use them.
//!
//! Every check happens before the input reaches the ring or allocates in
//! proportion to what the client claims: the frame codec rejects an
//! oversize length prefix before buffering it, a partial frame is charged
//! to the server-wide partial-frame budget while it arrives, and a Publish
//! is checked against the topic's maximum before it is copied into the
//! ring. Why each limit has its default is documented on its config key
//! (`crate::config::LimitsConfig`).

use std::time::Duration;

use crate::config::Config;

/// Bytes of a client's self-reported name (QUIC `Hello.client_name`, gRPC
/// `user-agent`) the server keeps: enough for any real client's name and
/// version, small enough that 10 000 connections cannot pin much with it.
pub const MAX_CLIENT_NAME_BYTES: usize = 256;

/// Limits in force.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest payload of one message (server-wide).
    pub max_message_bytes: usize,
    /// Largest frame on any stream after Welcome.
    pub max_frame_bytes: usize,
    /// Concurrent connections, both edges together.
    pub max_connections: usize,
    /// Live subscriptions per connection.
    pub max_subscriptions: u32,
    /// Concurrent publish streams per connection.
    pub max_publish_streams: u32,
    /// Topics one wildcard subscription may follow.
    pub max_topics_per_wildcard: u32,
    /// Topics one connection may create.
    pub topics_created_per_connection: u32,
    /// Time to send Hello (QUIC).
    pub hello_timeout: Duration,
    /// Time to finish the handshake (and the HTTP/2 preface).
    pub handshake_timeout: Duration,
    /// Time a started frame has to complete.
    pub frame_timeout: Duration,
}

/// Connections that may be in their handshake at once, per edge, at
/// least: a few hundred silent sockets must not lock real clients out
/// while they wait for their deadline.
pub const MIN_HANDSHAKES: usize = 1024;

impl Limits {
    /// How many connections may be in their handshake (TLS, preface,
    /// Hello) at once on one edge: `max_connections`, but never fewer than
    /// [`MIN_HANDSHAKES`]. Past it a new socket is dropped at once; each
    /// of these is dropped at `handshake_timeout` anyway, so silent sockets
    /// cost their slot for that long at most and never take a connection
    /// slot.
    pub fn max_handshakes(&self) -> usize {
        self.max_connections.max(MIN_HANDSHAKES)
    }

    /// Limits from a validated config.
    pub fn from_config(config: &Config) -> Limits {
        let l = &config.limits;
        Limits {
            max_message_bytes: l.max_message_bytes,
            max_frame_bytes: lapwing_proto::frame_limit_for(l.max_message_bytes),
            max_connections: l.max_connections,
            max_subscriptions: l.max_subscriptions_per_connection,
            max_publish_streams: l.max_publish_streams_per_connection,
            topics_created_per_connection: l.topics_created_per_connection,
            max_topics_per_wildcard: l.max_topics_per_wildcard,
            hello_timeout: config.hello_timeout(),
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
            frame_timeout: Duration::from_millis(l.frame_timeout_ms),
        }
    }
}

/// `name` cut to [`MAX_CLIENT_NAME_BYTES`] (at a char boundary), for
/// keeping; log it with `{:?}` so control characters are escaped.
pub fn client_name(name: &str) -> &str {
    if name.len() <= MAX_CLIENT_NAME_BYTES {
        return name;
    }
    let mut end = MAX_CLIENT_NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_are_capped_at_a_char_boundary() {
        assert_eq!(client_name("cli/1.0"), "cli/1.0");
        let long = "é".repeat(200); // 400 bytes
        let kept = client_name(&long);
        assert!(kept.len() <= MAX_CLIENT_NAME_BYTES && kept.len() >= MAX_CLIENT_NAME_BYTES - 1);
        assert!(long.starts_with(kept));
    }
}
