//! The Lapwing wire protocol, shared by the server and every client.
//!
//! - [`v1`]: the protobuf messages (generated from `lapwing/v1/*.proto`),
//!   and the tonic client and server stubs of the gRPC services
//!   (`v1::bus_client::BusClient`, `v1::admin_client::AdminClient`,
//!   `v1::bus_server`, `v1::admin_server`).
//! - [`frame`]: the QUIC stream framing (varint length + protobuf body), with
//!   the length checked against a limit before anything is buffered for it.
//! - [`message`]: the hand-written encoder of a `Message` delivery frame
//!   (the server's hot path), byte-identical to prost.
//! - [`topic`]: the topic naming rules; [`pattern`]: topic patterns (`*`,
//!   `>`) with matching, covering and overlap, for permissions and
//!   wildcard subscriptions.
//! - [`defaults`]: ports, data directory and file names both sides agree on.
//! - [`fingerprint`]: the certificate fingerprint the CLI pins.
//!
//! The protocol itself (streams, session, delivery contract, error codes) is
//! described in `proto/PROTOCOL.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod defaults;
pub mod exposition;
pub mod fingerprint;
pub mod frame;
pub mod message;
pub mod pattern;
pub mod topic;

mod error_code;

/// Generated protobuf types of package `lapwing.v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    rust_2018_idioms
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/lapwing.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every `.proto` file (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lapwing_descriptor.bin"));

/// QUIC ALPN protocol id of protocol version 1.
pub const ALPN: &[u8] = b"lapwing/1";

/// The protocol version this crate describes (`Hello.version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Frame limit on the control stream before `Welcome`: the peer has not
/// proven anything yet, so it may not make us buffer more than this.
pub const PRE_HELLO_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Bytes a frame needs beyond its payload: the topic (at most
/// [`topic::MAX_TOPIC_BYTES`]), field tags, varint lengths and the numeric
/// fields of `Publish`, `Delivery`/`Message` and `PublishResult`. Generous on
/// purpose: it only bounds buffering.
pub const FRAME_OVERHEAD_BYTES: usize = 512;

/// The largest frame a peer must accept when payloads are at most
/// `max_message_bytes`.
pub const fn frame_limit_for(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_add(FRAME_OVERHEAD_BYTES)
}

pub use frame::{encode_frame, FrameCodec, FrameError};
pub use message::{encode_message_frame, MessageFrame};
pub use topic::{validate_topic, TopicError};
pub use v1::ErrorCode;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn frame_limit_covers_a_max_size_publish_and_delivery() {
        let max = 1 << 20;
        let topic = "a".repeat(topic::MAX_TOPIC_BYTES);
        let payload = bytes::Bytes::from(vec![7u8; max]);
        let publish = v1::Publish {
            topic,
            payload: payload.clone(),
        };
        let delivery = v1::Delivery {
            kind: Some(v1::delivery::Kind::Message(v1::Message {
                seq: u64::MAX,
                payload,
                publish_time_unix_nanos: u64::MAX,
                epoch: u64::MAX,
                ..Default::default()
            })),
        };
        assert!(publish.encoded_len() <= frame_limit_for(max));
        assert!(delivery.encoded_len() <= frame_limit_for(max));
    }

    #[test]
    fn descriptor_set_names_both_files() {
        // File names are stored as plain UTF-8 inside the encoded set.
        let text = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        assert!(text.contains("lapwing/v1/quic.proto"));
        assert!(text.contains("lapwing/v1/common.proto"));
    }
}
