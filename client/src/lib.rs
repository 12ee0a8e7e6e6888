//! Async client for the Lapwing message bus, and the `lapwing` CLI.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lapwing_client::ClientError> {
//! use futures::StreamExt;
//! use lapwing_client::{Client, ClientConfig, Event, SubscribeOptions, Trust};
//!
//! let client = Client::connect(ClientConfig::new("127.0.0.1:7400", Trust::Insecure)).await?;
//! // A pattern: every `prices.` topic, the ones that exist and the ones to come.
//! let mut sub = client.subscribe("prices.>", SubscribeOptions::default()).await?;
//! client.publish("prices.eur", "1.0842").await?;
//! while let Some(event) = sub.next().await {
//!     match event? {
//!         Event::Message { topic, seq, payload, .. } => println!("{topic} {seq}: {payload:?}"),
//!         Event::Resync { topic, missed, resume_seq, .. } => {
//!             println!("{topic}: lost {missed}, resuming at {resume_seq}")
//!         }
//!         Event::Joined { topic, start_seq, .. } => println!("{topic}: from seq {start_seq}"),
//!         Event::Left { topic } => println!("{topic} was deleted"),
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The client keeps one QUIC connection. Each subscription is its own
//! server-opened stream, so a slow subscription never holds up another. When
//! the connection is lost (or the server says `GoAway`), the client
//! reconnects with backoff and resumes every subscription after the last
//! `{epoch, seq}` in its buffer (a wildcard subscription: every topic after
//! its own); whatever the server can no longer replay arrives as
//! [`Event::Resync`]. A path that stops answering without closing (a
//! partition, a killed server) is noticed by the liveness check: a `Ping`
//! on the control stream unanswered for [`ClientConfig::liveness_timeout`]
//! (2 s by default) ends the connection, and short, repeated reconnect
//! attempts find the path again soon after it heals. Against a cluster
//! (nodes over a NATS JetStream backbone, which number every message
//! alike), [`ClientConfig::server`] lists several nodes
//! (`"a:7400,b:7400"`): a lost connection reconnects to the next one, and
//! a resume the node refuses for now (`UNAVAILABLE`) is asked for again
//! instead of ending the subscription. See `proto/PROTOCOL.md`.
//!
//! Inside, for maintainers: `client.rs` is the API; `driver.rs` the session
//! driver (Hello, (re)subscribe, control stream, liveness pings,
//! reconnect), whose I/O goes through its `Transport`/`Connection` traits
//! (QUIC in `transport.rs`, a scripted fake in its tests); `subscription.rs` owns all subscription
//! state (the registry, the user's stream, the stream reader);
//! `publisher.rs` the publish streams; `shared.rs` what they share;
//! `command.rs` what handles ask of the driver; `cli/` the `lapwing` CLI.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod buffer;
mod client;
mod command;
mod config;
mod driver;
mod error;
mod publisher;
mod shared;
mod subscription;
mod tls;
mod transport;

pub mod cli;

pub use buffer::BufferOverflow;
pub use client::Client;
pub use config::{ClientCertificate, ClientConfig, Trust};
pub use error::{code_name, ClientError};
pub use lapwing_proto::v1::{ErrorCode, LagPolicy, ResyncReason};
pub use publisher::{PublishAck, Publisher};
pub use subscription::{Event, Start, SubscribeOptions, Subscription};

/// `lapped`, `not_retained`, `epoch_changed`, `skipped` (as the CLI prints it).
pub fn resync_reason_name(reason: ResyncReason) -> &'static str {
    match reason {
        ResyncReason::Unspecified => "unspecified",
        ResyncReason::Lapped => "lapped",
        ResyncReason::NotRetained => "not_retained",
        ResyncReason::EpochChanged => "epoch_changed",
        ResyncReason::Skipped => "skipped",
    }
}
