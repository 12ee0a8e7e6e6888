//! Prometheus metrics of one server instance.
//!
//! The `metrics` crate's macros write to one process-global recorder; tests
//! run many servers in one process, so each server owns its own
//! [`PrometheusRecorder`] and registers its handles on it directly. Nothing
//! here is global.
//!
//! Two kinds of values, chosen to keep the message path free of metric
//! updates:
//!
//! - **Read at scrape time** from state the server keeps anyway: topics,
//!   messages and bytes published (the topics' own atomic counters, plus
//!   what deleted topics had published), connections and subscriptions per
//!   transport (the connection table), uptime. Publishing touches no metric.
//! - **Counted once per batch** by each subscription task
//!   ([`crate::connections::SubscriptionMeter::record`]): messages and payload
//!   bytes delivered, resyncs, messages missed and ring laps per transport,
//!   and one publish-to-deliver latency sample per batch (its oldest
//!   message, so the histogram shows the worst of each batch).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, Key, Label, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::backbone::BackboneStats;
use crate::budget::Budget;
use crate::permissions::{Action, Denials};
use crate::registry::Registry;
use crate::topic::TopicStats;
use crate::transport::Transport;

/// Latency buckets in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

const LATENCY: &str = "lapwing_publish_to_deliver_seconds";

/// Per-transport counters, updated by subscription tasks once per batch.
#[derive(Clone)]
pub struct EdgeMetrics {
    pub(crate) delivered: Counter,
    pub(crate) delivered_bytes: Counter,
    pub(crate) resyncs: Counter,
    pub(crate) missed: Counter,
    pub(crate) laps: Counter,
    pub(crate) latency: Histogram,
    /// The same counts, readable (for the admin API's live stats).
    pub(crate) totals: Arc<EdgeTotals>,
}

/// Readable per-transport totals.
#[derive(Debug, Default)]
pub(crate) struct EdgeTotals {
    pub(crate) delivered: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) missed: AtomicU64,
}

/// Server-wide totals for the admin API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Messages published (deleted topics included).
    pub published: u64,
    /// Payload bytes published.
    pub published_bytes: u64,
    /// Messages delivered, all transports.
    pub delivered: u64,
    /// Resyncs sent, all transports.
    pub resyncs: u64,
    /// Messages missed, all transports.
    pub missed: u64,
}

impl std::fmt::Debug for EdgeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeMetrics").finish_non_exhaustive()
    }
}

/// The server-wide budgets and what they refused, read at scrape time.
struct Budgets {
    ring_memory: Gauge,
    ring_memory_limit: Gauge,
    topics_refused: Counter,
    partial_frames: Gauge,
    partial_frames_refused: Counter,
    topics_reaped: Counter,
    /// publish, subscribe, admin.
    permission_denied: [Counter; 3],
}

/// What deleted topics had published, so the totals never go down.
#[derive(Debug, Default)]
struct Retired {
    published: AtomicU64,
    bytes: AtomicU64,
}

/// See the module docs.
pub struct Metrics {
    recorder: PrometheusRecorder,
    edges: [EdgeMetrics; 2],
    topics: Gauge,
    budgets: Budgets,
    published: Counter,
    published_bytes: Counter,
    connections: [Gauge; 2],
    subscriptions: [Gauge; 2],
    uptime: Gauge,
    retired: Retired,
    /// Serialises scrapes so the absolute counter values stay monotonic.
    scrape: Mutex<(u64, u64)>,
    started: Instant,
    /// Cluster mode's series, registered at the first scrape that has a
    /// backbone (a single node does not list them).
    cluster: std::sync::OnceLock<ClusterMetrics>,
}

/// Cluster mode's series.
struct ClusterMetrics {
    up: Gauge,
    followed: Gauge,
    fed: Counter,
    holes: Counter,
    replays: Counter,
    replays_failed: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics with its own recorder.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.to_owned()), LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let r = &recorder;
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            let (name, help) = (name.into(), SharedString::from(help));
            r.describe_counter(name, unit, help);
        };
        let describe_gauge = |name: &'static str, help: &'static str| {
            r.describe_gauge(name.into(), None, help.into());
        };
        describe(
            "lapwing_messages_published_total",
            None,
            "Messages published, all topics and transports (deleted topics included).",
        );
        describe(
            "lapwing_published_bytes_total",
            Some(Unit::Bytes),
            "Payload bytes published.",
        );
        describe(
            "lapwing_messages_delivered_total",
            None,
            "Messages delivered to subscribers, by transport.",
        );
        describe(
            "lapwing_delivered_bytes_total",
            Some(Unit::Bytes),
            "Payload bytes delivered to subscribers, by transport.",
        );
        describe(
            "lapwing_resyncs_total",
            None,
            "Resyncs sent to subscribers (any reason), by transport.",
        );
        describe(
            "lapwing_messages_missed_total",
            None,
            "Messages subscribers missed, as reported in their resyncs, by transport.",
        );
        describe(
            "lapwing_ring_laps_total",
            None,
            "Times a ring overwrote messages a subscriber had not read yet (lapped, skipped or disconnected for lag), by transport.",
        );
        r.describe_histogram(
            LATENCY.into(),
            Some(Unit::Seconds),
            "Publish-to-deliver latency (server clock), one sample per delivered batch: its oldest message.".into(),
        );
        describe_gauge("lapwing_topics", "Topics in the registry.");
        describe_gauge(
            "lapwing_ring_memory_bytes",
            "Ring memory reserved by topics (limits.ring_memory_bytes is the budget).",
        );
        describe_gauge(
            "lapwing_ring_memory_limit_bytes",
            "The ring-memory budget, limits.ring_memory_bytes.",
        );
        describe(
            "lapwing_topics_refused_total",
            None,
            "Topics refused a ring because the ring-memory budget (limits.ring_memory_bytes) was used up (RESOURCE_EXHAUSTED).",
        );
        describe_gauge(
            "lapwing_partial_frame_bytes",
            "Bytes held for frames and gRPC messages still arriving, all connections.",
        );
        describe(
            "lapwing_partial_frames_refused_total",
            None,
            "Streams ended because the partial-frame budget (limits.partial_frame_bytes) was used up.",
        );
        describe(
            "lapwing_permission_denied_total",
            None,
            "Requests refused with PERMISSION_DENIED, by action (publish, subscribe, admin).",
        );
        describe(
            "lapwing_topics_reaped_total",
            None,
            "Auto-created topics deleted after limits.idle_topic_ttl_ms without subscribers or publishes.",
        );
        describe_gauge("lapwing_connections", "Open connections, by transport.");
        describe_gauge("lapwing_subscriptions", "Live subscriptions, by transport.");
        describe_gauge(
            "lapwing_uptime_seconds",
            "Seconds since the server started.",
        );

        let meta = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        let by = |name: &'static str, t: Transport| {
            Key::from_parts(name, vec![Label::new("transport", t.as_str())])
        };
        let edge = |t: Transport| EdgeMetrics {
            delivered: r.register_counter(&by("lapwing_messages_delivered_total", t), &meta),
            delivered_bytes: r.register_counter(&by("lapwing_delivered_bytes_total", t), &meta),
            resyncs: r.register_counter(&by("lapwing_resyncs_total", t), &meta),
            missed: r.register_counter(&by("lapwing_messages_missed_total", t), &meta),
            laps: r.register_counter(&by("lapwing_ring_laps_total", t), &meta),
            latency: r.register_histogram(&by(LATENCY, t), &meta),
            totals: Arc::default(),
        };
        let gauge_by = |name, t| r.register_gauge(&by(name, t), &meta);
        let edges = Transport::ALL.map(edge);
        // Touch every per-transport series so a scrape lists it from the
        // start (at 0), not only after the first event.
        for e in &edges {
            e.delivered.increment(0);
            e.delivered_bytes.increment(0);
            e.resyncs.increment(0);
            e.missed.increment(0);
            e.laps.increment(0);
        }
        Metrics {
            edges,
            topics: r.register_gauge(&Key::from_static_name("lapwing_topics"), &meta),
            budgets: Budgets {
                ring_memory: r
                    .register_gauge(&Key::from_static_name("lapwing_ring_memory_bytes"), &meta),
                ring_memory_limit: r.register_gauge(
                    &Key::from_static_name("lapwing_ring_memory_limit_bytes"),
                    &meta,
                ),
                topics_refused: r.register_counter(
                    &Key::from_static_name("lapwing_topics_refused_total"),
                    &meta,
                ),
                partial_frames: r
                    .register_gauge(&Key::from_static_name("lapwing_partial_frame_bytes"), &meta),
                partial_frames_refused: r.register_counter(
                    &Key::from_static_name("lapwing_partial_frames_refused_total"),
                    &meta,
                ),
                topics_reaped: r
                    .register_counter(&Key::from_static_name("lapwing_topics_reaped_total"), &meta),
                permission_denied: ["publish", "subscribe", "admin"].map(|action| {
                    let key = Key::from_parts(
                        "lapwing_permission_denied_total",
                        vec![Label::new("action", action)],
                    );
                    r.register_counter(&key, &meta)
                }),
            },
            published: r.register_counter(
                &Key::from_static_name("lapwing_messages_published_total"),
                &meta,
            ),
            published_bytes: r.register_counter(
                &Key::from_static_name("lapwing_published_bytes_total"),
                &meta,
            ),
            connections: Transport::ALL.map(|t| gauge_by("lapwing_connections", t)),
            subscriptions: Transport::ALL.map(|t| gauge_by("lapwing_subscriptions", t)),
            uptime: r.register_gauge(&Key::from_static_name("lapwing_uptime_seconds"), &meta),
            retired: Retired::default(),
            scrape: Mutex::new((0, 0)),
            started: Instant::now(),
            cluster: std::sync::OnceLock::new(),
            recorder,
        }
    }

    fn register_cluster(&self) -> ClusterMetrics {
        let r = &self.recorder;
        let meta = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        let gauge = |name: &'static str, help: &'static str| {
            r.describe_gauge(name.into(), None, help.into());
            r.register_gauge(&Key::from_static_name(name), &meta)
        };
        let counter = |name: &'static str, help: &'static str| {
            r.describe_counter(name.into(), None, help.into());
            r.register_counter(&Key::from_static_name(name), &meta)
        };
        ClusterMetrics {
            up: gauge(
                "lapwing_backbone_up",
                "Cluster mode: 1 while the NATS JetStream backbone is reachable.",
            ),
            followed: gauge(
                "lapwing_backbone_topics",
                "Cluster mode: backbone topics this node follows (has subscribers for).",
            ),
            fed: counter(
                "lapwing_backbone_fed_total",
                "Cluster mode: messages copied from the backbone into this node's rings.",
            ),
            holes: counter(
                "lapwing_backbone_holes_total",
                "Cluster mode: seqs the backbone no longer held when this node's feed reached them (reported NOT_RETAINED).",
            ),
            replays: counter(
                "lapwing_backbone_replays_total",
                "Cluster mode: resumes older than this node's ring, replayed from the backbone.",
            ),
            replays_failed: counter(
                "lapwing_backbone_replays_failed_total",
                "Cluster mode: replays that failed (their subscription ended with UNAVAILABLE).",
            ),
        }
    }

    /// The counters a transport's subscription tasks update.
    pub fn edge(&self, transport: Transport) -> &EdgeMetrics {
        &self.edges[transport.index()]
    }

    /// Remembers what a topic that is being deleted had published, so the
    /// published totals do not drop with it.
    pub fn retire_topic(&self, stats: &TopicStats) {
        self.retired
            .published
            .fetch_add(stats.published, Ordering::Relaxed);
        self.retired.bytes.fetch_add(stats.bytes, Ordering::Relaxed);
    }

    /// Seconds since this server started.
    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Server-wide totals: published from the topics (plus deleted
    /// ones), the rest from the edges.
    pub fn totals(&self, registry: &Registry) -> Totals {
        let mut t = Totals {
            published: self.retired.published.load(Ordering::Relaxed),
            published_bytes: self.retired.bytes.load(Ordering::Relaxed),
            ..Totals::default()
        };
        let (published, bytes) = registry.published_totals();
        t.published += published;
        t.published_bytes += bytes;
        for e in &self.edges {
            t.delivered += e.totals.delivered.load(Ordering::Relaxed);
            t.resyncs += e.totals.resyncs.load(Ordering::Relaxed);
            t.missed += e.totals.missed.load(Ordering::Relaxed);
        }
        t
    }

    /// Reads the scrape-time values and renders everything in the
    /// Prometheus text format. `counts` is (connections, subscriptions)
    /// per transport, indexed like [`Transport::ALL`]
    /// (`Connections::counts`); `partial_frames` is the partial-frame
    /// budget; `denials` the permission denials.
    pub fn render(
        &self,
        registry: &Registry,
        counts: [(u64, u64); 2],
        partial_frames: &Budget,
        denials: &Denials,
        backbone: Option<BackboneStats>,
    ) -> String {
        if let Some(stats) = backbone {
            let c = self.cluster.get_or_init(|| self.register_cluster());
            c.up.set(if stats.up { 1.0 } else { 0.0 });
            c.followed.set(stats.followed as f64);
            c.fed.absolute(stats.fed);
            c.holes.absolute(stats.holes);
            c.replays.absolute(stats.replays);
            c.replays_failed.absolute(stats.replays_failed);
        }
        let totals = self.totals(registry);
        let (published, bytes) = (totals.published, totals.published_bytes);
        {
            // A topic deleted between `retire_topic` and the sum above is
            // counted twice for one scrape; never report a smaller value
            // than before.
            let mut last = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
            last.0 = last.0.max(published);
            last.1 = last.1.max(bytes);
            self.published.absolute(last.0);
            self.published_bytes.absolute(last.1);
        }
        self.topics.set(registry.len() as f64);
        let b = &self.budgets;
        let ring = registry.ring_memory();
        b.ring_memory.set(ring.used() as f64);
        b.ring_memory_limit.set(ring.limit() as f64);
        b.topics_refused.absolute(ring.refused());
        b.partial_frames.set(partial_frames.used() as f64);
        b.partial_frames_refused.absolute(partial_frames.refused());
        b.topics_reaped.absolute(registry.reaped());
        let [publish, subscribe, admin] = &b.permission_denied;
        publish.absolute(denials.of(Action::Publish));
        subscribe.absolute(denials.of(Action::Subscribe));
        admin.absolute(denials.admin());
        for (i, (conns, subs)) in counts.into_iter().enumerate() {
            self.connections[i].set(conns as f64);
            self.subscriptions[i].set(subs as f64);
        }
        self.uptime.set(self.started.elapsed().as_secs_f64());
        self.recorder.handle().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_transport_labels() {
        let m = Arc::new(Metrics::new());
        let config = crate::Config::for_tests(std::path::Path::new("/tmp/unused"));
        let registry = Registry::from_config(&config).unwrap();
        let conns = crate::connections::Connections::new(m.clone());
        let t = registry.get_or_create("a").unwrap();
        t.publish(b"abc").unwrap();
        m.edge(Transport::Grpc).delivered.increment(3);
        m.edge(Transport::Grpc).latency.record(0.001);
        let text = m.render(
            &registry,
            conns.counts(),
            &Budget::new(1 << 20),
            &Denials::default(),
            None,
        );
        assert!(
            !text.contains("lapwing_backbone"),
            "a single node lists no cluster series"
        );
        for line in [
            "lapwing_messages_published_total 1",
            "lapwing_published_bytes_total 3",
            "lapwing_topics 1",
            "lapwing_topics_refused_total 0",
            "lapwing_topics_reaped_total 0",
            "lapwing_permission_denied_total{action=\"subscribe\"} 0",
            "lapwing_messages_delivered_total{transport=\"grpc\"} 3",
            "lapwing_messages_delivered_total{transport=\"quic\"} 0",
            "lapwing_connections{transport=\"quic\"} 0",
            "# TYPE lapwing_publish_to_deliver_seconds histogram",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        // Deleting a topic does not make the total go down.
        m.retire_topic(&t.stats());
        registry.delete("a").unwrap();
        let cluster = BackboneStats {
            up: true,
            followed: 2,
            fed: 40,
            holes: 3,
            replays: 5,
            replays_failed: 1,
        };
        let text = m.render(
            &registry,
            conns.counts(),
            &Budget::new(1 << 20),
            &Denials::default(),
            Some(cluster),
        );
        assert!(
            text.contains("lapwing_messages_published_total 1"),
            "{text}"
        );
        for line in [
            "lapwing_backbone_up 1",
            "lapwing_backbone_topics 2",
            "lapwing_backbone_fed_total 40",
            "lapwing_backbone_holes_total 3",
            "lapwing_backbone_replays_total 5",
            "lapwing_backbone_replays_failed_total 1",
            "# HELP lapwing_backbone_up",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
