//! Who is connected, over which transport, and what each connection
//! subscribes to: the table behind the admin API's `ListConnections` and
//! `CloseConnection`, and the connection and subscription gauges.
//!
//! Every edge registers a connection when its session starts
//! ([`Connections::open`], removed again when the returned [`Tracked`] is
//! dropped) and each subscription with [`Connection::add_subscription`].
//! A subscription's [`SubscriptionMeter`] is updated by its task once per
//! drained batch ([`SubscriptionMeter::record`]), never per message, from
//! the drain's own accounting: the admin API reads lag and counts from it,
//! and the same call feeds the Prometheus counters of that transport.
//!
//! The table is a std `Mutex` over a `BTreeMap` (ids in connection order):
//! it is taken when a connection or subscription comes or goes and when an
//! operator lists them, never on the message path and never across an
//! `.await`.
//!
//! Closing a connection ([`Connections::close`]) cancels its
//! [`Connection::close_requested`] token; each edge turns that into its own
//! way of ending a session (QUIC: `CONNECTION_CLOSE`; gRPC: every stream of
//! the HTTP/2 connection ends with `UNAVAILABLE`, then the TCP connection is
//! dropped).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lapwing_proto::v1::{self, ResyncReason};
use tokio_util::sync::CancellationToken;

use crate::drain::{Deliver, DeliveryRef, Drain, DrainStats, Framed, Step};
use crate::metrics::{EdgeMetrics, Metrics};
use crate::topic::{now_unix_nanos, Topic};
pub use crate::transport::Transport;

/// See the module docs.
#[derive(Debug)]
pub struct Connections {
    next_id: AtomicU64,
    map: Mutex<BTreeMap<u64, Arc<Connection>>>,
    metrics: Arc<Metrics>,
}

impl Connections {
    /// An empty table whose subscriptions report to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Connections {
        Connections {
            next_id: AtomicU64::new(1),
            map: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// A fresh connection id (unique across transports). Edges that need
    /// the id before the session is set up take it here and pass it to
    /// [`Connections::open`].
    pub fn allocate_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a connection; it is listed until the returned handle is
    /// dropped.
    pub fn open(
        self: &Arc<Self>,
        id: u64,
        transport: Transport,
        peer: SocketAddr,
        client_name: &str,
    ) -> Tracked {
        let entry = Arc::new(Connection {
            id,
            transport,
            peer,
            connected_unix_nanos: now_unix_nanos(),
            client_name: Mutex::new(client_name.to_owned()),
            close: CancellationToken::new(),
            close_reason: Mutex::new(String::new()),
            subs: Mutex::new(BTreeMap::new()),
            next_sub_id: AtomicU64::new(1),
            edge: self.metrics.edge(transport).clone(),
        });
        lock(&self.map).insert(id, entry.clone());
        Tracked {
            table: self.clone(),
            entry,
        }
    }

    /// Every live connection, in id order.
    pub fn list(&self) -> Vec<Arc<Connection>> {
        lock(&self.map).values().cloned().collect()
    }

    /// Asks the edge to close connection `id`; false if there is none.
    pub fn close(&self, id: u64, reason: &str) -> bool {
        let Some(conn) = lock(&self.map).get(&id).cloned() else {
            return false;
        };
        *lock(&conn.close_reason) = if reason.is_empty() {
            "closed by an operator".to_owned()
        } else {
            format!("closed by an operator: {reason}")
        };
        conn.close.cancel();
        true
    }

    /// (connections, subscriptions) per transport, indexed like [`Transport::ALL`].
    pub fn counts(&self) -> [(u64, u64); 2] {
        let mut counts = [(0, 0); 2];
        for conn in lock(&self.map).values() {
            let c = &mut counts[conn.transport.index()];
            c.0 += 1;
            c.1 += lock(&conn.subs).len() as u64;
        }
        counts
    }
}

/// One live connection.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    transport: Transport,
    peer: SocketAddr,
    connected_unix_nanos: u64,
    client_name: Mutex<String>,
    close: CancellationToken,
    close_reason: Mutex<String>,
    subs: Mutex<BTreeMap<u64, Arc<SubscriptionMeter>>>,
    next_sub_id: AtomicU64,
    edge: EdgeMetrics,
}

impl Connection {
    /// Its id (QUIC: `Welcome.connection_id`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Cancelled when an operator closes this connection.
    pub fn close_requested(&self) -> &CancellationToken {
        &self.close
    }

    /// Why an operator closed it ("" while open).
    pub fn close_reason(&self) -> String {
        lock(&self.close_reason).clone()
    }

    /// Sets the client's self-reported name (QUIC `Hello.client_name`,
    /// gRPC `user-agent`) if none is known yet.
    pub fn set_client_name_if_empty(&self, name: &str) {
        let mut current = lock(&self.client_name);
        if current.is_empty() {
            name.clone_into(&mut current);
        }
    }

    /// Live subscriptions of this connection.
    pub fn subscription_count(&self) -> usize {
        lock(&self.subs).len()
    }

    /// A subscription id unique within this connection, for edges where
    /// the server picks it (gRPC).
    pub fn allocate_subscription_id(&self) -> u64 {
        self.next_sub_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a subscription; listed until the guard is dropped.
    pub fn add_subscription(self: &Arc<Self>, id: u64, target: Metered) -> SubscriptionGuard {
        let start_seq = match &target {
            Metered::Topic { start_seq, .. } => *start_seq,
            Metered::Pattern(_) => 0,
        };
        let meter = Arc::new(SubscriptionMeter {
            id,
            target,
            next_seq: AtomicU64::new(start_seq),
            lag: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            missed: AtomicU64::new(0),
            start_seq,
            edge: self.edge.clone(),
        });
        lock(&self.subs).insert(id, meter.clone());
        SubscriptionGuard {
            conn: self.clone(),
            meter,
        }
    }

    /// The admin API's view of this connection.
    pub fn info(&self) -> v1::ConnectionInfo {
        v1::ConnectionInfo {
            id: self.id,
            transport: self.transport.as_str().to_owned(),
            peer_address: self.peer.to_string(),
            client_name: lock(&self.client_name).clone(),
            connected_unix_nanos: self.connected_unix_nanos,
            subscriptions: lock(&self.subs).values().map(|m| m.info()).collect(),
        }
    }
}

/// A registered connection; dropping it unregisters it.
#[derive(Debug)]
pub struct Tracked {
    table: Arc<Connections>,
    entry: Arc<Connection>,
}

impl Tracked {
    /// The shared entry (subscription tasks keep it to register themselves).
    pub fn entry(&self) -> &Arc<Connection> {
        &self.entry
    }
}

impl std::ops::Deref for Tracked {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.entry
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        lock(&self.table.map).remove(&self.entry.id);
    }
}

/// A registered subscription; dropping it unregisters it.
#[derive(Debug)]
pub struct SubscriptionGuard {
    conn: Arc<Connection>,
    meter: Arc<SubscriptionMeter>,
}

impl SubscriptionGuard {
    /// The meter the subscription task updates after each batch.
    pub fn meter(&self) -> &SubscriptionMeter {
        &self.meter
    }
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        lock(&self.conn.subs).remove(&self.meter.id);
    }
}

/// What a subscription follows, as its meter shows it.
#[derive(Debug)]
pub enum Metered {
    /// One topic, from `start_seq`.
    Topic {
        /// The topic.
        topic: Arc<Topic>,
        /// Its first seq.
        start_seq: u64,
    },
    /// Every topic a pattern matches (a wildcard subscription).
    Pattern(String),
}

impl Metered {
    /// A drain's topic and start.
    pub fn drain(drain: &Drain) -> Metered {
        Metered::Topic {
            topic: drain.topic().clone(),
            start_seq: drain.start_seq(),
        }
    }
}

/// A subscription's progress as the admin API shows it, and the bridge from
/// its drain to the transport's Prometheus counters.
#[derive(Debug)]
pub struct SubscriptionMeter {
    id: u64,
    target: Metered,
    start_seq: u64,
    next_seq: AtomicU64,
    /// A wildcard subscription's lag, all topics together, as of its last
    /// batch (one topic's is read live from its head instead).
    lag: AtomicU64,
    delivered: AtomicU64,
    resyncs: AtomicU64,
    missed: AtomicU64,
    edge: EdgeMetrics,
}

/// What one drained batch held, gathered while its events are emitted
/// (see [`BatchTally::see`]); cheap enough to call for every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchTally {
    first_publish_time: u64,
    payload_bytes: u64,
    laps: u64,
}

impl BatchTally {
    /// Notes one event of the batch.
    #[inline]
    pub fn see(&mut self, d: &DeliveryRef<'_>) {
        match d {
            DeliveryRef::Message {
                publish_time_unix_nanos,
                payload,
                ..
            } => self.message(*publish_time_unix_nanos, payload.len()),
            DeliveryRef::Resync(r) => {
                if matches!(r.reason, ResyncReason::Lapped | ResyncReason::Skipped) {
                    self.laps += 1;
                }
            }
            DeliveryRef::Joined { .. } | DeliveryRef::Left { .. } => {}
        }
    }

    /// Notes a message the drain encoded straight into a frame.
    #[inline]
    pub fn see_framed(&mut self, m: &Framed) {
        self.message(m.publish_time_unix_nanos, m.payload_len);
    }

    #[inline]
    fn message(&mut self, publish_time_unix_nanos: u64, payload_len: usize) {
        if self.first_publish_time == 0 {
            self.first_publish_time = publish_time_unix_nanos;
        }
        self.payload_bytes += payload_len as u64;
    }
}

/// A sink whose events are tallied on their way to it, for
/// [`SubscriptionMeter::record`].
pub(crate) struct Tallied<'a, D: ?Sized> {
    /// Where the events go.
    pub(crate) sink: &'a mut D,
    /// What went there.
    pub(crate) tally: BatchTally,
}

impl<D: Deliver + ?Sized> Deliver for Tallied<'_, D> {
    fn event(&mut self, event: DeliveryRef<'_>) {
        self.tally.see(&event);
        self.sink.event(event);
    }

    fn frames(&mut self, need: usize) -> Option<&mut bytes::BytesMut> {
        self.sink.frames(need)
    }

    fn framed(&mut self, message: Framed) {
        self.tally.see_framed(&message);
        self.sink.framed(message);
    }

    fn named(&self) -> bool {
        self.sink.named()
    }
}

impl SubscriptionMeter {
    /// Records a batch the subscription just emitted: `stats` is its
    /// accounting so far, `lag` what its topics hold unread (wildcard
    /// only; ignored for one topic), `step` what `next_batch` returned.
    /// Called once per batch: the counters move by the batch's totals,
    /// and the publish-to-deliver latency is sampled once, for the batch's
    /// oldest message (the worst of the batch).
    pub fn record(&self, stats: DrainStats, lag: u64, tally: &BatchTally, step: Step) {
        self.lag.store(lag, Ordering::Relaxed);
        let delta =
            |slot: &AtomicU64, now: u64| now.saturating_sub(slot.swap(now, Ordering::Relaxed));
        let delivered = delta(&self.delivered, stats.delivered);
        let resyncs = delta(&self.resyncs, stats.resyncs);
        let missed = delta(&self.missed, stats.missed);
        self.next_seq.store(
            self.start_seq + stats.delivered + stats.missed,
            Ordering::Relaxed,
        );
        let laps = tally.laps + u64::from(matches!(step, Step::Lagged { .. }));
        let e = &self.edge;
        let totals = &e.totals;
        totals.delivered.fetch_add(delivered, Ordering::Relaxed);
        totals.resyncs.fetch_add(resyncs, Ordering::Relaxed);
        totals.missed.fetch_add(missed, Ordering::Relaxed);
        if delivered > 0 {
            e.delivered.increment(delivered);
            e.delivered_bytes.increment(tally.payload_bytes);
        }
        if resyncs > 0 {
            e.resyncs.increment(resyncs);
        }
        if missed > 0 {
            e.missed.increment(missed);
        }
        if laps > 0 {
            e.laps.increment(laps);
        }
        if tally.first_publish_time != 0 {
            let nanos = now_unix_nanos().saturating_sub(tally.first_publish_time);
            e.latency.record(nanos as f64 / 1e9);
        }
    }

    /// The admin API's view.
    pub fn info(&self) -> v1::SubscriptionInfo {
        let next_seq = self.next_seq.load(Ordering::Relaxed);
        let (topic, next_seq, lag) = match &self.target {
            Metered::Topic { topic, .. } => (
                topic.name().to_owned(),
                next_seq,
                topic.head().saturating_sub(next_seq),
            ),
            Metered::Pattern(p) => (p.clone(), 0, self.lag.load(Ordering::Relaxed)),
        };
        v1::SubscriptionInfo {
            id: self.id,
            topic,
            next_seq,
            lag,
            delivered: self.delivered.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert, remove or read: a panic
    // cannot leave the data half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::{BatchLimits, StartAt};
    use crate::topic::TopicSettings;
    use lapwing_proto::v1::LagPolicy;

    fn table() -> Arc<Connections> {
        Arc::new(Connections::new(Arc::new(Metrics::new())))
    }

    #[test]
    fn connections_and_subscriptions_come_and_go() {
        let t = table();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = t.open(t.allocate_id(), Transport::Quic, peer, "cli");
        let b = t.open(t.allocate_id(), Transport::Grpc, peer, "");
        b.set_client_name_if_empty("grpc-python");
        b.set_client_name_if_empty("other");
        assert_eq!(t.list().len(), 2);
        let topic = Arc::new(Topic::new(
            "t".into(),
            TopicSettings {
                ring_bytes: 64 * 1024,
                max_message_bytes: 1024,
            },
        ));
        let mut drain = Drain::new(topic.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        let sub = b
            .entry()
            .add_subscription(b.allocate_subscription_id(), Metered::drain(&drain));
        assert_eq!(t.counts(), [(1, 0), (1, 1)]);
        for _ in 0..5 {
            topic.publish(b"hello").unwrap();
        }
        let mut tally = BatchTally::default();
        let step = drain.next_batch(BatchLimits::default(), |d| tally.see(&d));
        sub.meter().record(drain.stats(), 0, &tally, step);
        let info = b.info();
        assert_eq!(info.transport, "grpc");
        assert_eq!(info.client_name, "grpc-python");
        let s = &info.subscriptions[0];
        assert_eq!(
            (s.topic.as_str(), s.delivered, s.next_seq, s.lag),
            ("t", 5, 5, 0)
        );
        topic.publish(b"more").unwrap();
        assert_eq!(b.info().subscriptions[0].lag, 1);
        drop(sub);
        assert_eq!(t.counts(), [(1, 0), (1, 0)]);
        assert!(t.close(a.id(), "maintenance"));
        assert!(a.close_requested().is_cancelled());
        assert!(a.close_reason().contains("maintenance"));
        assert!(!t.close(999, ""));
        drop(a);
        drop(b);
        assert!(t.list().is_empty());
    }
}
