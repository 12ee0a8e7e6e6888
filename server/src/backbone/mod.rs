//! Cluster mode: topics served through a NATS JetStream backbone, so that
//! every node reports the same `{epoch, seq}` for a message and a client
//! can resume on any node.
//!
//! - **One stream per topic.** Topic `a.b` is the stream
//!   `<stream_prefix>a_2Eb` (a reversible escape; a hash for very long
//!   names) capturing the one subject `<subject_prefix>.a.b`. The stream's
//!   sequence is the topic's seq (stream seq `s` is topic seq `s - 1`, as
//!   Lapwing's seqs start at 0); the stream's creation time is the topic's
//!   epoch, so it changes only when the stream is recreated, that is when
//!   the backbone lost the topic's history. Retention is the stream's
//!   (`max_msgs`, `max_bytes`; the oldest go first).
//! - **Publishing** ([`Backbone::submit`], then [`Pending::ack`]) goes to
//!   the stream and is acknowledged by the backbone with its position; a
//!   publish stream keeps many in flight, so the round trips overlap.
//! - **Fanout** stays local: a node follows a topic only while it has
//!   subscribers for it. [`Backbone::prepare`] registers the topic with the
//!   stream's epoch and, as `base`, the stream's head; `feed.rs` copies the
//!   stream from there into the topic's ring, in order. One slow subscriber
//!   never slows the backbone or another node: the ring laps it, as on a
//!   single node.
//! - **Resume on any node**: a resume older than the ring is replayed from
//!   the stream (`replay.rs`, through the `History` seam of `Drain`), then
//!   joins the ring without a gap or a duplicate; only what the stream no
//!   longer retains is a `NOT_RETAINED` resync, exact.
//! - **Outage**: publishes fail at once with a retryable UNAVAILABLE while
//!   the backbone is unreachable (no message is queued behind it); rings
//!   keep what they hold; feeds resume where they stopped once it is back,
//!   and a seq the stream lost meanwhile is a hole, reported exactly.
//!   `/readyz` says whether the backbone is reachable.

mod discovery;
mod feed;
mod replay;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use lapwing_proto::pattern::Pattern;
use lapwing_proto::v1::PublishAck;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{BackboneConfig, BackboneStorage};
use crate::drain::StartAt;
use crate::error::RequestError;
use crate::history::{History, Replayed};
use crate::registry::{CreationQuota, Registry};
use crate::topic::Topic;

/// Longest stream name this module makes: a file-backed stream is a
/// directory, and file names stop at 255 bytes.
const MAX_STREAM_NAME: usize = 200;

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// `backbone.url` does not parse.
    #[error("backbone.url: {0}")]
    Url(String),
    /// The credentials file could not be read or parsed.
    #[error("backbone.credentials: {0}")]
    Credentials(std::io::Error),
    /// The client could not be set up.
    #[error("backbone: {0}")]
    Connect(String),
}

/// See the module docs.
#[derive(Debug)]
pub struct Backbone {
    client: async_nats::Client,
    js: jetstream::Context,
    config: BackboneConfig,
    registry: Arc<Registry>,
    /// Each topic's epoch as last looked up (publishes need it for their
    /// acknowledgement); forgotten when a publish finds the stream gone.
    epochs: Mutex<HashMap<Arc<str>, u64>>,
    /// Bumped on every (re)connection, so feeds restart their consumers at
    /// once instead of waiting for missed heartbeats.
    connected: watch::Receiver<u64>,
    up: Arc<AtomicBool>,
    /// Whether JetStream answered its last health probe (a connected
    /// backbone whose JetStream lost its quorum does not).
    answering: AtomicBool,
    /// The largest message the NATS servers take (their `max_payload`,
    /// 1 MiB by default), as last announced; 0 before the first connection.
    max_payload: AtomicUsize,
    stop: CancellationToken,
    counters: Arc<Counters>,
}

/// What the feeds and replays did, for `/metrics`.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) fed: AtomicU64,
    pub(super) holes: AtomicU64,
    pub(super) replays: AtomicU64,
    pub(super) replays_failed: AtomicU64,
}

/// A snapshot of the backbone's state and counters (`/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackboneStats {
    /// Whether the backbone is reachable.
    pub up: bool,
    /// Backbone topics this node follows now.
    pub followed: u64,
    /// Messages the feeds copied from the backbone into rings.
    pub fed: u64,
    /// Seqs the feeds found gone from the backbone (holes).
    pub holes: u64,
    /// Resumes replayed from the backbone.
    pub replays: u64,
    /// Replays that failed (their subscription ended with UNAVAILABLE).
    pub replays_failed: u64,
}

impl Backbone {
    /// A backbone client for `config` (which must be enabled). Connects in
    /// the background and keeps reconnecting: a server whose backbone is
    /// down starts, reports not ready, and refuses publishes with
    /// UNAVAILABLE until it is up. Must be called within a tokio runtime.
    pub fn start(
        config: &BackboneConfig,
        registry: Arc<Registry>,
        stop: CancellationToken,
    ) -> Result<Arc<Backbone>, BackboneError> {
        let addrs = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| BackboneError::Url(format!("`{u}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, connected) = watch::channel(0u64);
        let up = Arc::new(AtomicBool::new(false));
        let events_up = up.clone();
        let mut options = async_nats::ConnectOptions::new()
            .name("lapwing-server")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            // JetStream API requests (stream lookups and creations) wait no
            // longer than a publish's acknowledgement (`Context::set_timeout`
            // bounds only the latter; requests default to 10 s).
            .request_timeout(Some(Duration::from_millis(config.ack_timeout_ms)))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50u64 << attempts.min(5)).min(1000))
            })
            .event_callback(move |event| {
                let tx = tx.clone();
                let up = events_up.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            up.store(true, Ordering::Release);
                            tx.send_modify(|g| *g += 1);
                            info!("backbone connected");
                        }
                        async_nats::Event::Disconnected => {
                            up.store(false, Ordering::Release);
                            warn!("backbone disconnected; reconnecting");
                        }
                        other => info!(event = %other, "backbone event"),
                    }
                }
            });
        if let Some(path) = &config.credentials {
            let text = std::fs::read_to_string(path).map_err(BackboneError::Credentials)?;
            options = options
                .credentials(&text)
                .map_err(BackboneError::Credentials)?;
        }
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &config.tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        // With `retry_on_initial_connect` this only spawns the connection
        // task: nothing in it waits on the network.
        let client = futures::executor::block_on(options.connect(addrs))
            .map_err(|e| BackboneError::Connect(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_millis(config.ack_timeout_ms));
        let backbone = Arc::new(Backbone {
            client,
            js,
            config: config.clone(),
            registry,
            epochs: Mutex::new(HashMap::new()),
            connected,
            up,
            answering: AtomicBool::new(true),
            max_payload: AtomicUsize::new(0),
            stop,
            counters: Arc::default(),
        });
        tokio::spawn(discovery::run(backbone.clone()));
        tokio::spawn(probe(backbone.clone()));
        Ok(backbone)
    }

    /// Whether the backbone is reachable now: publishes and new
    /// subscriptions fail at once with UNAVAILABLE while it is not.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether the backbone is reachable and its JetStream answers
    /// (`/readyz`): a NATS cluster that lost its JetStream quorum keeps
    /// the connection but stores nothing.
    pub fn is_ready(&self) -> bool {
        self.is_up() && self.answering.load(Ordering::Acquire)
    }

    /// State and counters, for `/metrics`.
    pub fn stats(&self) -> BackboneStats {
        let c = &self.counters;
        BackboneStats {
            up: self.is_up(),
            followed: self.registry.backbone_topics() as u64,
            fed: c.fed.load(Ordering::Relaxed),
            holes: c.holes.load(Ordering::Relaxed),
            replays: c.replays.load(Ordering::Relaxed),
            replays_failed: c.replays_failed.load(Ordering::Relaxed),
        }
    }

    /// The largest payload the backbone takes (`None` before it was first
    /// reached): a larger one is MESSAGE_TOO_LARGE, as on a single node.
    pub fn max_payload(&self) -> Option<usize> {
        Some(self.max_payload.load(Ordering::Relaxed)).filter(|&m| m > 0)
    }

    /// Whether `topic` is served through the backbone.
    pub fn covers(&self, topic: &str) -> bool {
        self.registry.is_backbone(topic)
    }

    /// The stream that holds `topic`.
    pub fn stream_name(&self, topic: &str) -> String {
        stream_name(&self.config.stream_prefix, topic)
    }

    /// The subject `topic`'s messages are published on.
    pub fn subject(&self, topic: &str) -> String {
        format!("{}.{topic}", self.config.subject_prefix)
    }

    fn unreachable(&self) -> RequestError {
        RequestError::Unavailable(format!(
            "the backbone ({}) is unreachable; nothing was published, retry",
            self.config.url
        ))
    }

    /// The stream of `topic`, created (counted against `quota`) if it
    /// does not exist yet.
    async fn ensure_stream(
        &self,
        topic: &str,
        quota: Option<&CreationQuota>,
    ) -> Result<stream::Stream, RequestError> {
        if !self.is_up() {
            return Err(self.unreachable());
        }
        let name = self.stream_name(topic);
        match self.js.get_stream(&name).await {
            Ok(s) => return Ok(s),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(unavailable("looking up the topic's stream", e)),
        }
        if let Some(q) = quota {
            q.take()?;
        }
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![self.subject(topic)],
            max_messages: self.config.max_msgs,
            max_bytes: self.config.max_bytes,
            num_replicas: self.config.replicas,
            storage: match self.config.storage {
                BackboneStorage::File => stream::StorageType::File,
                BackboneStorage::Memory => stream::StorageType::Memory,
            },
            discard: stream::DiscardPolicy::Old,
            retention: stream::RetentionPolicy::Limits,
            description: Some(format!("Lapwing topic {topic}")),
            ..Default::default()
        };
        // Another node may create it at the same moment: then it exists.
        match self.js.get_or_create_stream(config).await {
            Ok(s) => Ok(s),
            Err(e) => Err(unavailable("creating the topic's stream", e)),
        }
    }

    /// The backbone topic `topic` on this node, following it first if
    /// this node does not yet (the stream is created if needed, counted
    /// against `quota`). Subscribing needs this before `Drain::new`.
    pub async fn prepare(
        self: &Arc<Self>,
        topic: &str,
        quota: Option<&CreationQuota>,
    ) -> Result<Arc<Topic>, RequestError> {
        if let Some(t) = self.registry.get(topic).filter(|t| !t.is_deleted()) {
            return Ok(t);
        }
        lapwing_proto::validate_topic(topic)?;
        let stream = self.ensure_stream(topic, quota).await?;
        let info = stream.cached_info();
        let epoch = epoch_of(info);
        // Stream seq `last + 1` is topic seq `last`: the next message.
        let base = info.state.last_sequence;
        let history: Arc<dyn History> = self.clone();
        let (t, created) = self
            .registry
            .get_or_create_backbone(topic, None, epoch, base, history)?;
        self.remember_epoch(t.name(), t.epoch());
        if created {
            t.note_known_first(info.state.first_sequence.saturating_sub(1));
            if let Err(e) = t.allocate_ring() {
                self.registry.remove_if_current(&t);
                return Err(crate::topic_publisher::publish_error(topic, e));
            }
            tokio::spawn(feed::run(self.clone(), t.clone(), base + 1));
        }
        Ok(t)
    }

    fn epoch_known(&self, topic: &str) -> Option<u64> {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs.get(topic).copied()
    }

    fn forget(&self, topic: &str) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs.remove(topic);
    }

    /// Sends `payload` to `topic`'s stream and returns without waiting
    /// for the backbone's acknowledgement: [`Pending::ack`] waits for it.
    /// Many can be in flight at once (a publish stream pipelines them);
    /// the backbone stores them in the order they were sent. UNAVAILABLE
    /// (retryable) at once when the backbone is unreachable.
    pub async fn submit(
        self: &Arc<Self>,
        topic: &str,
        payload: Bytes,
        quota: Option<&CreationQuota>,
    ) -> Result<Pending, RequestError> {
        if !self.is_up() {
            return Err(self.unreachable());
        }
        let epoch = match self.epoch_known(topic) {
            Some(epoch) => epoch,
            None => {
                let stream = self.ensure_stream(topic, quota).await?;
                let epoch = epoch_of(stream.cached_info());
                self.remember_epoch(topic, epoch);
                epoch
            }
        };
        let ack = self
            .js
            .publish(self.subject(topic), payload)
            .await
            .map_err(|e| unavailable("publishing", e))?;
        Ok(Pending {
            ack,
            epoch,
            timeout_ms: self.config.ack_timeout_ms,
            backbone: self.clone(),
            topic: topic.into(),
        })
    }

    /// Before a wildcard subscription to `pattern`: makes this node follow
    /// every backbone topic it matches (at most `limit`, else
    /// RESOURCE_EXHAUSTED as for local topics), so the subscription's scan
    /// of the registry finds them all and starts them where it starts.
    /// Topics created later reach it through `discovery.rs`.
    pub async fn prepare_pattern(
        self: &Arc<Self>,
        pattern: &Pattern,
        limit: u32,
    ) -> Result<(), RequestError> {
        if !self.registry.overlaps_backbone(pattern) {
            return Ok(());
        }
        if !self.is_up() {
            return Err(self.unreachable());
        }
        let topics = self.topics_matching(pattern).await?;
        if topics.len() > limit as usize {
            return Err(crate::error::Exhausted::WildcardTopics { limit }.into());
        }
        let mut prepared = futures::stream::iter(topics)
            .map(|topic| async move { self.prepare(&topic, None).await })
            .buffer_unordered(8);
        while let Some(p) = prepared.next().await {
            p?;
        }
        Ok(())
    }

    /// The backbone topics `pattern` matches, from the backbone's list of
    /// streams (filtered by subject on the backbone's side).
    async fn topics_matching(&self, pattern: &Pattern) -> Result<Vec<String>, RequestError> {
        #[derive(serde::Serialize)]
        struct NamesRequest<'a> {
            offset: usize,
            subject: &'a str,
        }
        #[derive(serde::Deserialize)]
        struct NamesPage {
            total: usize,
            streams: Option<Vec<String>>,
        }
        let subject = self.subject(pattern.as_str());
        let mut topics = Vec::new();
        let mut offset = 0;
        loop {
            let page: jetstream::response::Response<NamesPage> = self
                .js
                .request(
                    "STREAM.NAMES",
                    &NamesRequest {
                        offset,
                        subject: &subject,
                    },
                )
                .await
                .map_err(|e| unavailable("listing streams", e))?;
            let page = match page {
                jetstream::response::Response::Ok(p) => p,
                jetstream::response::Response::Err { error } => {
                    return Err(unavailable("listing streams", error))
                }
            };
            let names = page.streams.unwrap_or_default();
            if names.is_empty() {
                break;
            }
            offset += names.len();
            for name in names {
                if let Some(topic) = self.topic_of_stream(&name).await {
                    if self.registry.is_backbone(&topic) && pattern.matches(&topic) {
                        topics.push(topic);
                    }
                }
            }
            if offset >= page.total {
                break;
            }
        }
        Ok(topics)
    }

    /// The topic a stream of ours holds (`None`: not one of ours).
    async fn topic_of_stream(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix(&self.config.stream_prefix)?;
        if rest.starts_with("H_") {
            // A hashed name: the topic is in the stream's subject.
            let stream = self.js.get_stream(name).await.ok()?;
            let subject = stream.cached_info().config.subjects.first()?.clone();
            return subject
                .strip_prefix(&format!("{}.", self.config.subject_prefix))
                .map(str::to_owned);
        }
        unescape(rest)
    }

    /// Before a subscribe that needs the stream's bounds: a resume past what
    /// this node's feed has written (so the drain clamps only a resume past
    /// the backbone's head, a confused client, not one past this node's, a
    /// client failing over from a node whose feed was ahead), or a start at
    /// `oldest` (the backbone's oldest, replayed up to the ring).
    pub async fn refresh(&self, topic: &Topic, start: StartAt) -> Result<(), RequestError> {
        let needed = match start {
            StartAt::From { epoch, next } => epoch == topic.epoch() && next > topic.head(),
            StartAt::Oldest => true,
            StartAt::Latest => false,
        };
        if !needed {
            return Ok(());
        }
        let name = self.stream_name(topic.name());
        match current_stream(&self.js, &name, topic.epoch()).await {
            Ok(stream) => {
                let state = &stream.cached_info().state;
                // Stream seq `s` is topic seq `s - 1`: the head is `last`.
                topic.raise_known_head(state.last_sequence);
                topic.note_known_first(state.first_sequence.saturating_sub(1));
                Ok(())
            }
            // The drain finds the topic gone or replaced by itself.
            Err(StreamError::Gone) => Ok(()),
            Err(StreamError::Failed(e)) => Err(unavailable("looking up the topic's stream", e)),
        }
    }

    fn remember_epoch(&self, topic: &str, epoch: u64) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded like the registry: forget them all rather than grow.
        if epochs.len() >= self.registry.max_topics() {
            epochs.clear();
        }
        epochs.insert(topic.into(), epoch);
    }
}

/// A publish sent to the backbone, its acknowledgement still to come.
#[derive(Debug)]
pub struct Pending {
    ack: jetstream::context::PublishAckFuture,
    epoch: u64,
    timeout_ms: u64,
    backbone: Arc<Backbone>,
    topic: Arc<str>,
}

impl Pending {
    /// Waits for the backbone's acknowledgement (at most
    /// `backbone.ack_timeout_ms`): the message's `{epoch, seq}`. After a
    /// timeout the message may still have been stored, so a retry may
    /// publish it twice.
    pub async fn ack(self) -> Result<PublishAck, RequestError> {
        let timeout = Duration::from_millis(self.timeout_ms);
        match tokio::time::timeout(timeout, std::future::IntoFuture::into_future(self.ack)).await {
            Ok(Ok(ack)) => Ok(PublishAck {
                epoch: self.epoch,
                seq: ack.sequence.saturating_sub(1),
            }),
            Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                // "No responders": the stream was deleted, or its leader is
                // being elected. The next publish looks the stream up (or
                // creates it) again.
                self.backbone.forget(&self.topic);
                Err(RequestError::Unavailable(format!(
                    "topic `{}`'s backbone stream did not answer (no responders: its leader is being elected, or it was deleted); nothing was published, retry",
                    self.topic
                )))
            }
            Ok(Err(e)) => Err(unavailable("publishing", e)),
            Err(_) => Err(RequestError::Unavailable(format!(
                "no acknowledgement from the backbone within {} ms (backbone.ack_timeout_ms); the message may or may not be stored",
                self.timeout_ms
            ))),
        }
    }
}

impl History for Backbone {
    fn replay(&self, topic: &Arc<Topic>, next: u64) -> mpsc::Receiver<Replayed> {
        self.counters.replays.fetch_add(1, Ordering::Relaxed);
        replay::start(
            self.js.clone(),
            self.stream_name(topic.name()),
            topic.clone(),
            next,
            self.stop.clone(),
            self.counters.clone(),
        )
    }
}

/// How often [`probe`] asks JetStream whether it answers.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Asks JetStream for the account's info every [`PROBE_EVERY`] (a request
/// every JetStream server answers only with a quorum), for `/readyz`.
async fn probe(backbone: Arc<Backbone>) {
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = backbone.stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !backbone.is_up() {
            continue;
        }
        let max_payload = backbone.client.server_info().max_payload;
        backbone.max_payload.store(max_payload, Ordering::Relaxed);
        let answered = tokio::time::timeout(PROBE_EVERY * 2, jetstream_answers(&backbone.js))
            .await
            .unwrap_or(false);
        if answered != backbone.answering.swap(answered, Ordering::AcqRel) {
            if answered {
                info!("backbone JetStream answers again");
            } else {
                warn!("backbone JetStream does not answer (no quorum?); not ready");
            }
        }
    }
}

/// Whether JetStream answers an account-info request (`$JS.API.INFO`)
/// without an error. The answer's fields are not read: nats-server 2.9 in
/// a cluster leaves out some that async-nats's `query_account` requires.
async fn jetstream_answers(js: &jetstream::Context) -> bool {
    #[derive(serde::Serialize)]
    struct Empty {}
    #[derive(serde::Deserialize)]
    struct Answer {}
    matches!(
        js.request::<_, _, jetstream::response::Response<Answer>>("INFO", &Empty {})
            .await,
        Ok(jetstream::response::Response::Ok(_))
    )
}

/// A topic's epoch: its stream's creation time (Unix nanos, never 0).
fn epoch_of(info: &stream::Info) -> u64 {
    u64::try_from(info.created.unix_timestamp_nanos())
        .unwrap_or(1)
        .max(1)
}

/// Why a topic's stream could not be read.
pub(super) enum StreamError {
    /// It no longer exists, or it was recreated (another epoch).
    Gone,
    /// The backbone did not answer.
    Failed(String),
}

/// `topic`'s stream, if it is still the one of `epoch`; its `cached_info`
/// is as just looked up (the feed, replays and [`Backbone::refresh`] read
/// the stream's bounds from it).
pub(super) async fn current_stream(
    js: &jetstream::Context,
    name: &str,
    epoch: u64,
) -> Result<stream::Stream, StreamError> {
    let stream = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return Err(StreamError::Gone),
        Err(e) => return Err(StreamError::Failed(e.to_string())),
    };
    if epoch_of(stream.cached_info()) != epoch {
        return Err(StreamError::Gone);
    }
    Ok(stream)
}

/// One message of a topic's stream.
pub(super) struct Stored {
    /// Its stream seq (topic seq + 1).
    pub(super) stream_seq: u64,
    /// Backbone clock at publish (Unix nanos).
    pub(super) published: u64,
    pub(super) payload: Bytes,
}

/// The messages of `stream` in order from stream seq `start`, through an
/// ordered consumer (the feed's and every replay's reader). A seq the
/// stream no longer holds is skipped: callers turn the jump into a gap.
pub(super) async fn read_from(
    stream: &stream::Stream,
    start: u64,
) -> Result<impl futures::Stream<Item = Result<Stored, String>> + Unpin, String> {
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let messages = consumer.messages().await.map_err(|e| e.to_string())?;
    Ok(messages.map(|message| {
        let message = message.map_err(|e| e.to_string())?;
        let info = message.info().map_err(|e| e.to_string())?;
        Ok(Stored {
            stream_seq: info.stream_sequence,
            published: u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0),
            payload: message.message.payload.clone(),
        })
    }))
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

fn unavailable(doing: &str, e: impl std::fmt::Display) -> RequestError {
    RequestError::Unavailable(format!("backbone error {doing}: {e}; retry"))
}

/// `prefix` + `topic` escaped to what a stream name may hold (`.` is
/// `_2E`, `_` is `_5F`, so the mapping is one to one); a name that would
/// be longer than [`MAX_STREAM_NAME`] is `prefix` + `H_` + a SHA-256
/// prefix of the topic instead (an escaped name never has `_` followed by
/// `H`).
fn stream_name(prefix: &str, topic: &str) -> String {
    let escaped_len = topic.len() + 2 * topic.matches(['.', '_']).count();
    if prefix.len() + escaped_len > MAX_STREAM_NAME {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(topic.as_bytes());
        let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
        return format!("{prefix}H_{hex}");
    }
    let mut name = String::with_capacity(prefix.len() + escaped_len);
    name.push_str(prefix);
    for c in topic.chars() {
        match c {
            '.' => name.push_str("_2E"),
            '_' => name.push_str("_5F"),
            c => name.push(c),
        }
    }
    name
}

/// The topic an escaped stream name stands for (see [`stream_name`]).
fn unescape(escaped: &str) -> Option<String> {
    let mut topic = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(i) = rest.find('_') {
        topic.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3)? {
            "2E" => topic.push('.'),
            "5F" => topic.push('_'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    topic.push_str(rest);
    lapwing_proto::validate_topic(&topic).ok()?;
    Some(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_give_their_topic_back() {
        for topic in ["a", "a.b", "a_b.c_d", "x-1._2E"] {
            let name = stream_name("LW_", topic);
            assert_eq!(
                unescape(name.strip_prefix("LW_").unwrap()).as_deref(),
                Some(topic)
            );
        }
        assert_eq!(unescape("a_ZZb"), None);
        assert_eq!(unescape("a_2"), None);
    }

    #[test]
    fn stream_names_are_one_to_one_and_bounded() {
        assert_eq!(stream_name("LW_", "a.b"), "LW_a_2Eb");
        assert_eq!(stream_name("LW_", "a_b"), "LW_a_5Fb");
        assert_ne!(stream_name("LW_", "a.b"), stream_name("LW_", "a_2Eb"));
        let long = format!("{}.{}", "a".repeat(127), "b".repeat(127));
        let name = stream_name("LW_", &long);
        assert!(name.len() <= MAX_STREAM_NAME, "{name}");
        assert!(name.starts_with("LW_H_"));
        assert_ne!(name, stream_name("LW_", &long.replace('b', "c")));
        for name in [stream_name("LW_", "x.y-z_1"), name] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{name}"
            );
        }
    }
}
