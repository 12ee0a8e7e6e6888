//! One adapter per system under test. The scenarios only see these traits,
//! so adding a system is one new file and one line in [`SystemKind`]
//! (`lapwing_grpc.rs` was added that way).
//!
//! Rules every adapter follows, for fairness:
//! - each subscriber is its own connection, made through the system's own
//!   Rust client library;
//! - a subscribe returns only once the server has confirmed it, so a message
//!   published afterwards must reach it;
//! - anything the system tells the subscriber about loss or disconnection is
//!   surfaced as an [`Event`] or in [`SideChannel`], never swallowed.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;

pub mod lapwing;
pub mod lapwing_grpc;
pub mod nats;
pub mod redis;

/// A boxed, sendable future (the adapters are used as trait objects).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a subscription yields, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message: the bench payload, as published.
    Message(Bytes),
    /// The system said that exactly `missed` messages were lost here
    /// (Lapwing's `Resync`).
    Resync {
        /// Messages lost, as announced.
        missed: u64,
    },
    /// The subscription or its connection ended; the text says why.
    Closed(String),
}

/// A live subscription: its events and what the client library told us on
/// the side (connection events, client-side drops).
pub struct Subscription {
    /// Events in order.
    pub events: Pin<Box<dyn Stream<Item = Event> + Send>>,
    /// Counters the client library's callbacks fill in.
    pub side: Arc<SideChannel>,
}

impl Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

/// Out-of-band signals from a client library.
#[derive(Debug, Default)]
pub struct SideChannel {
    /// The connection dropped (and maybe reconnected).
    pub disconnects: AtomicU64,
    /// The client library signalled it dropped messages itself
    /// (async-nats `SlowConsumer` events; a lower bound, the event queue
    /// is itself bounded).
    pub client_drop_events: AtomicU64,
    /// The server reported an error on this connection.
    pub server_errors: AtomicU64,
}

impl SideChannel {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A publishing connection.
pub trait Publisher: Send + Debug {
    /// Publishes `payloads` to `topic`, in order. Fire-and-forget where the
    /// system allows it; returns when the client library accepted them.
    fn publish_batch<'a>(
        &'a mut self,
        topic: &'a str,
        payloads: &'a [Bytes],
    ) -> BoxFut<'a, anyhow::Result<()>>;

    /// Waits until everything published has left the client.
    fn flush(&mut self) -> BoxFut<'_, anyhow::Result<()>>;
}

/// A system under test, reachable on loopback.
pub trait System: Send + Sync + Debug {
    /// Static facts for the report.
    fn info(&self) -> SystemInfo;

    /// Opens a new connection and subscribes it to `topic`; returns once the
    /// server confirmed the subscription.
    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFut<'a, anyhow::Result<Subscription>>;

    /// Opens a new publishing connection.
    fn publisher(&self) -> BoxFut<'_, anyhow::Result<Box<dyn Publisher>>>;

    /// Server process id, for CPU and RSS readings.
    fn server_pid(&self) -> Option<u32>;

    /// Every server process whose CPU counts for this system (a cluster:
    /// its nodes and its backbone); by default the one of `server_pid`.
    fn server_pids(&self) -> Vec<u32> {
        self.server_pid().into_iter().collect()
    }
}

/// Facts about a system, printed beside its numbers.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    /// Short id used in tables: one of [`SystemKind::id`].
    pub id: String,
    /// Transport and encryption, e.g. "QUIC + TLS 1.3".
    pub transport: String,
    /// Whether traffic is encrypted.
    pub tls: bool,
    /// Client library used by the generator.
    pub client: String,
}

/// The systems the harness knows, in the order they run and are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum SystemKind {
    /// Lapwing over QUIC via lapwing-client.
    LapwingQuic,
    /// Lapwing's gRPC edge (plaintext HTTP/2) via tonic and lapwing-proto's
    /// generated client; the same server process as `LapwingQuic`.
    LapwingGrpc,
    /// NATS without TLS via async-nats.
    Nats,
    /// NATS with TLS via async-nats (rustls).
    NatsTls,
    /// Redis pub/sub via the redis crate (tokio).
    Redis,
}

impl SystemKind {
    /// Every system, in declaration order.
    pub const ALL: [SystemKind; 5] = [
        SystemKind::LapwingQuic,
        SystemKind::LapwingGrpc,
        SystemKind::Nats,
        SystemKind::NatsTls,
        SystemKind::Redis,
    ];

    /// Id used on the command line and in tables.
    pub fn id(self) -> &'static str {
        match self {
            SystemKind::LapwingQuic => "lapwing-quic",
            SystemKind::LapwingGrpc => "lapwing-grpc",
            SystemKind::Nats => "nats",
            SystemKind::NatsTls => "nats-tls",
            SystemKind::Redis => "redis",
        }
    }

    /// The system with this id.
    pub fn from_id(id: &str) -> Option<SystemKind> {
        SystemKind::ALL.into_iter().find(|k| k.id() == id)
    }

    /// Position of `id` in [`SystemKind::ALL`] (unknown ids after all
    /// known ones): tables and plots list systems in this order, and a plot
    /// colours each system by it, so a system keeps its colour whichever
    /// others were measured.
    pub fn rank(id: &str) -> usize {
        SystemKind::ALL
            .iter()
            .position(|k| k.id() == id)
            .unwrap_or(SystemKind::ALL.len())
    }
}
