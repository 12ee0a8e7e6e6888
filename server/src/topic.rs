//! One topic: its ring, its epoch, the wakeup its subscribers park on, and
//! its counters.
//!
//! Many connections publish to one topic at once, so the ring is written
//! through the multi-producer publisher (`MpPublisher`, sequence claiming);
//! no lock is taken on publish.
//!
//! Rings are allocated lazily, on the first publish. A topic that only has
//! subscribers (or was created through the admin API and never used) costs
//! a few hundred bytes, not its ring size; this is what lets 10 000 idle
//! topics fit in a few MiB while every ring can still hold a maximum-size
//! message. The epoch is chosen when the topic is created, not when its
//! ring is, so subscribers learn it immediately.
//!
//! Each stored message is the publish time (8 bytes, little-endian Unix
//! nanoseconds, server clock) followed by the payload, written with
//! `publish_parts` so the payload is copied once, straight into the ring.
//!
//! A **backbone topic** (cluster mode, `backbone/`) is not written by
//! publishers: its messages come from the backbone, in the backbone's
//! order, through the node's feed (`Topic::write_from_backbone`). Its
//! epoch is the backbone stream's, and its seqs are the backbone's: the
//! ring's seq 0 is topic seq [`Topic::base`] (the backbone's head when this
//! node began to follow the topic), so every node reports the same
//! `{epoch, seq}` for a message. A seq the backbone no longer held when the
//! feed reached it is written as a *hole* (`Topic::write_holes`), which a
//! drain reports as missed (`NOT_RETAINED`), never as a message; what came
//! before `base` is replayed from the backbone ([`History`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use lapwing_ring::{MpPublisher, Ring, RingConfig};
use tokio_util::sync::CancellationToken;

use crate::budget::{Budget, Reservation};
use crate::error::Exhausted;
use crate::history::History;
use crate::wakeup::Wakeup;

/// Bytes the server prepends to each stored payload: the publish time.
pub const STORED_PREFIX_BYTES: usize = 8;

/// The publish time a hole is stored with: no message was ever published
/// at the end of time, so it cannot be a real one.
pub(crate) const HOLE_TIME: u64 = u64::MAX;

/// Size settings of one topic, fixed for the life of its ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// Ring capacity in bytes.
    pub ring_bytes: usize,
    /// Largest payload a publisher may send.
    pub max_message_bytes: usize,
}

impl TopicSettings {
    fn ring_config(&self) -> RingConfig {
        RingConfig::new(
            self.ring_bytes,
            self.max_message_bytes + STORED_PREFIX_BYTES,
        )
    }
}

/// Checks that a ring of `ring_bytes` can hold messages of `max_message_bytes`
/// (plus the stored publish time) without allocating it.
pub fn check_ring_config(
    ring_bytes: usize,
    max_message_bytes: usize,
) -> Result<(), lapwing_ring::ConfigError> {
    TopicSettings {
        ring_bytes,
        max_message_bytes,
    }
    .ring_config()
    .geometry()
    .map(|_| ())
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The payload is over the topic's maximum.
    #[error("message of {len} bytes is over the topic's maximum of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The topic was deleted.
    #[error("topic was deleted")]
    Deleted,
    /// The ring would not fit in the server's ring-memory budget.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// The ring could not be created (settings are validated before a
    /// topic exists, so this means a bug, not bad input).
    #[error("cannot create ring: {0}")]
    Ring(#[from] lapwing_ring::ConfigError),
    /// A backbone topic is written only by its feed; publishes go to the
    /// backbone (a routing bug if it happens).
    #[error("topic is served from the backbone; publish there")]
    Backbone,
}

#[derive(Debug)]
struct TopicRing {
    publisher: MpPublisher,
    /// This ring's share of `limits.ring_memory_bytes`, given back when the
    /// topic is dropped (its last subscriber or publisher let go of it).
    _memory: Reservation,
}

impl TopicRing {
    fn ring(&self) -> &Arc<Ring> {
        self.publisher.ring()
    }
}

/// Live counters of a topic.
#[derive(Debug, Default)]
pub(crate) struct TopicCounters {
    pub(crate) published: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) subscribers: AtomicU64,
    pub(crate) resyncs_sent: AtomicU64,
    pub(crate) messages_missed: AtomicU64,
}

/// A snapshot of a topic's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    /// Topic name.
    pub name: String,
    /// Current epoch.
    pub epoch: u64,
    /// Configured ring size.
    pub ring_bytes: usize,
    /// Largest payload accepted.
    pub max_message_bytes: usize,
    /// Memory the ring holds (0 until the first publish allocates it).
    pub ring_memory_bytes: usize,
    /// Seq the next message will get.
    pub head: u64,
    /// Oldest seq still held (best effort).
    pub oldest_retained: u64,
    /// Messages published.
    pub published: u64,
    /// Payload bytes published.
    pub bytes: u64,
    /// Live subscriptions.
    pub subscribers: u64,
    /// Resyncs sent to subscribers.
    pub resyncs_sent: u64,
    /// Messages subscribers missed (sum of the resyncs' `missed`).
    pub messages_missed: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    epoch: u64,
    settings: TopicSettings,
    ring: OnceLock<TopicRing>,
    ring_init: Mutex<()>,
    wakeup: Wakeup,
    deleted: AtomicBool,
    created_unix_nanos: u64,
    memory: Arc<Budget>,
    /// Created by a publish or subscribe (not by config or the admin API):
    /// such a topic is reaped once idle (see `Registry::reap_idle`).
    auto_created: bool,
    /// The reaper's notes: `published` at its last look, and since when
    /// (Unix nanos) nothing was published and nobody subscribed. Touched
    /// only by the reaper, never on the message path.
    idle_seen: AtomicU64,
    idle_since: AtomicU64,
    /// A backbone topic's history before `base` (`None`: a local topic).
    history: Option<Arc<dyn History>>,
    /// The topic seq of ring seq 0 (0 for a local topic).
    base: u64,
    /// Cancelled when the topic is deleted (its feed stops).
    gone: CancellationToken,
    /// A backbone topic's head as last looked up on the stream
    /// ([`Topic::raise_known_head`]), never lowered; [`Topic::known_head`]
    /// is the larger of it and how far the feed has got.
    known_head: AtomicU64,
    /// A backbone topic's oldest retained seq as last looked up
    /// (`u64::MAX`: not looked up): where `oldest` starts.
    known_first: AtomicU64,
    pub(crate) counters: TopicCounters,
}

impl Topic {
    /// A topic with a fresh random epoch and no ring yet, outside any
    /// registry (no memory budget, never reaped).
    #[cfg(test)]
    pub(crate) fn new(name: Arc<str>, settings: TopicSettings) -> Topic {
        Topic::in_budget(name, settings, Budget::unlimited(), false)
    }

    /// A topic whose ring, once allocated, is reserved from `memory`.
    pub(crate) fn in_budget(
        name: Arc<str>,
        settings: TopicSettings,
        memory: Arc<Budget>,
        auto_created: bool,
    ) -> Topic {
        Topic::build(
            name,
            settings,
            memory,
            auto_created,
            random_epoch(),
            0,
            None,
        )
    }

    /// A backbone topic (see the module docs): `epoch` is the backbone
    /// stream's, ring seq 0 is topic seq `base`, and `history` replays what
    /// came before. Reaped once it has had no subscriber for the idle TTL.
    pub(crate) fn from_backbone(
        name: Arc<str>,
        settings: TopicSettings,
        memory: Arc<Budget>,
        epoch: u64,
        base: u64,
        history: Arc<dyn History>,
    ) -> Topic {
        Topic::build(name, settings, memory, true, epoch, base, Some(history))
    }

    fn build(
        name: Arc<str>,
        settings: TopicSettings,
        memory: Arc<Budget>,
        auto_created: bool,
        epoch: u64,
        base: u64,
        history: Option<Arc<dyn History>>,
    ) -> Topic {
        let now = now_unix_nanos();
        Topic {
            name,
            epoch,
            settings,
            ring: OnceLock::new(),
            ring_init: Mutex::new(()),
            wakeup: Wakeup::new(),
            deleted: AtomicBool::new(false),
            created_unix_nanos: now,
            memory,
            auto_created,
            idle_seen: AtomicU64::new(0),
            idle_since: AtomicU64::new(now),
            history,
            base,
            gone: CancellationToken::new(),
            known_head: AtomicU64::new(base),
            known_first: AtomicU64::new(u64::MAX),
            counters: TopicCounters::default(),
        }
    }

    /// Whether this topic has been idle (no publish, no subscriber) since
    /// at least `cutoff` (Unix nanos), as seen by successive calls at
    /// `now`. Only auto-created topics are ever idle in this sense. A
    /// backbone topic is idle without subscribers, however busy its feed:
    /// the node follows a topic only for its own subscribers.
    pub(crate) fn idle_before(&self, now: u64, cutoff: u64) -> bool {
        if !self.auto_created {
            return false;
        }
        let published = if self.history.is_some() {
            0
        } else {
            self.counters.published.load(Ordering::Relaxed)
        };
        let busy = self.counters.subscribers.load(Ordering::Relaxed) > 0
            || self.idle_seen.swap(published, Ordering::Relaxed) != published;
        if busy {
            self.idle_since.store(now, Ordering::Relaxed);
            return false;
        }
        self.idle_since.load(Ordering::Relaxed) <= cutoff
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The epoch: random, fixed for the life of this topic.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When this topic (this epoch) was created, server clock.
    pub fn created_unix_nanos(&self) -> u64 {
        self.created_unix_nanos
    }

    /// Size settings.
    pub fn settings(&self) -> TopicSettings {
        self.settings
    }

    /// The ring, if a publish allocated it.
    pub fn ring(&self) -> Option<&Arc<Ring>> {
        self.ring.get().map(TopicRing::ring)
    }

    /// Seq the next message will get.
    pub fn head(&self) -> u64 {
        self.base + self.ring().map_or(0, |r| r.head())
    }

    /// Oldest seq still held (best effort).
    pub fn oldest_retained(&self) -> u64 {
        self.base + self.ring().map_or(0, |r| r.oldest_retained())
    }

    /// The topic seq of the ring's seq 0: 0 for a local topic; for a
    /// backbone topic, the backbone's head when this node began to follow
    /// it. Ring seqs plus `base` are topic seqs.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The head to clamp a resume to: this node's head for a local topic;
    /// for a backbone topic the backbone's head as last known, which may
    /// be ahead of what this node's feed has written.
    pub fn known_head(&self) -> u64 {
        if self.is_backbone() {
            self.known_head.load(Ordering::Acquire).max(self.head())
        } else {
            self.head()
        }
    }

    /// Records that the backbone's head is at least `head` (a fresh look
    /// at the stream before a resume past this node's head).
    pub(crate) fn raise_known_head(&self, head: u64) {
        self.known_head.fetch_max(head, Ordering::AcqRel);
    }

    /// A backbone topic's oldest retained seq, as last looked up; `None`
    /// for a local topic or before any look.
    pub fn known_first(&self) -> Option<u64> {
        Some(self.known_first.load(Ordering::Acquire)).filter(|&f| f != u64::MAX)
    }

    /// Records the backbone's oldest retained seq (a fresh look).
    pub(crate) fn note_known_first(&self, first: u64) {
        self.known_first
            .store(first.min(u64::MAX - 1), Ordering::Release);
    }

    /// A backbone topic's history (what came before `base`); `None` for a
    /// local topic.
    pub fn history(&self) -> Option<&Arc<dyn History>> {
        self.history.as_ref()
    }

    /// Whether this topic's messages come from the backbone.
    pub fn is_backbone(&self) -> bool {
        self.history.is_some()
    }

    /// Resolves once the topic is deleted (or reaped).
    pub async fn deleted(&self) {
        self.gone.cancelled().await
    }

    /// Where subscribers park; woken after every publish, on ring creation
    /// and on deletion.
    pub fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// Whether the topic was deleted. Subscribers end their streams;
    /// publishers holding a cached handle look the name up again.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.gone.cancel();
        self.wakeup.wake();
    }

    /// Publishes one payload stamped with the current time; returns its seq.
    pub fn publish(&self, payload: &[u8]) -> Result<u64, PublishError> {
        if self.is_backbone() {
            return Err(PublishError::Backbone);
        }
        self.write(now_unix_nanos(), payload)
    }

    /// The feed's write: the backbone's next message, stamped with the
    /// backbone's publish time; returns its topic seq.
    pub(crate) fn write_from_backbone(
        &self,
        publish_time_unix_nanos: u64,
        payload: &[u8],
    ) -> Result<u64, PublishError> {
        // A real time never equals the hole marker; clamp rather than lie.
        self.write(publish_time_unix_nanos.min(HOLE_TIME - 1), payload)
    }

    /// The feed's write for `count` seqs the backbone no longer held when
    /// the feed reached them: `count` empty entries stamped [`HOLE_TIME`],
    /// so the ring's seqs stay the backbone's.
    pub(crate) fn write_holes(&self, count: u64) -> Result<(), PublishError> {
        for _ in 0..count {
            self.write(HOLE_TIME, &[])?;
        }
        Ok(())
    }

    fn write(&self, publish_time_unix_nanos: u64, payload: &[u8]) -> Result<u64, PublishError> {
        let max = self.settings.max_message_bytes;
        if payload.len() > max {
            return Err(PublishError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        if self.is_deleted() {
            return Err(PublishError::Deleted);
        }
        let ring = match self.ring.get() {
            Some(r) => r,
            None => self.init_ring()?,
        };
        let time = publish_time_unix_nanos.to_le_bytes();
        let seq = match ring.publisher.publish_parts(&[&time, payload]) {
            Ok(seq) => seq,
            Err(lapwing_ring::PublishError::TooLarge { len, max }) => {
                // Unreachable given the check above; kept typed, not a panic.
                return Err(PublishError::TooLarge { len, max });
            }
        };
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        self.wakeup.wake();
        Ok(self.base + seq)
    }

    /// Allocates the ring now (a backbone topic's, before its feed and
    /// subscribers start: a budget refusal goes to the subscriber).
    pub(crate) fn allocate_ring(&self) -> Result<(), PublishError> {
        match self.ring.get() {
            Some(_) => Ok(()),
            None => self.init_ring().map(|_| ()),
        }
    }

    #[cold]
    fn init_ring(&self) -> Result<&TopicRing, PublishError> {
        // A std Mutex: held only for the allocation, never across .await.
        let _guard = self.ring_init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = self.ring.get() {
            return Ok(r);
        }
        let config = self.settings.ring_config();
        let needed = config.geometry()?.memory_bytes();
        let memory = self.memory.reserve(needed).ok_or(Exhausted::RingMemory {
            limit: self.memory.limit(),
            needed,
        })?;
        let (publisher, _ring) = Ring::multi_producer_with_epoch(config, self.epoch)?;
        let r = self.ring.get_or_init(|| TopicRing {
            publisher,
            _memory: memory,
        });
        // Subscribers waiting for the ring to exist.
        self.wakeup.wake();
        Ok(r)
    }

    /// A snapshot of state and counters.
    pub fn stats(&self) -> TopicStats {
        let c = &self.counters;
        TopicStats {
            name: self.name.to_string(),
            epoch: self.epoch,
            ring_bytes: self.settings.ring_bytes,
            max_message_bytes: self.settings.max_message_bytes,
            ring_memory_bytes: self.ring().map_or(0, |r| r.memory_bytes()),
            head: self.head(),
            oldest_retained: self.oldest_retained(),
            published: c.published.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            subscribers: c.subscribers.load(Ordering::Relaxed),
            resyncs_sent: c.resyncs_sent.load(Ordering::Relaxed),
            messages_missed: c.messages_missed.load(Ordering::Relaxed),
        }
    }
}

/// Server wall clock in Unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A random non-zero epoch. `RandomState` is seeded from the OS once per
/// process and perturbed per instance; mixing in the time and a counter
/// makes two topics created in one process (or one restart) differ.
fn random_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_unix_nanos());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// A stored ring entry's publish time and where its payload starts, from
/// the entry's first word and length ([`lapwing_ring::Pending`]): the
/// payload can then be copied from there without copying the time.
pub(crate) fn stored_head(first_word: u64, len: usize) -> (u64, usize) {
    if len >= STORED_PREFIX_BYTES {
        (first_word, STORED_PREFIX_BYTES)
    } else {
        // Never written by this server; deliver as is rather than panic.
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TopicSettings {
        TopicSettings {
            ring_bytes: 64 * 1024,
            max_message_bytes: 1024,
        }
    }

    #[test]
    fn ring_is_allocated_on_first_publish() {
        let t = Topic::new("a.b".into(), settings());
        assert!(t.ring().is_none());
        assert_eq!(t.head(), 0);
        assert_eq!(t.stats().ring_memory_bytes, 0);
        assert_eq!(t.publish(b"hello").unwrap(), 0);
        assert_eq!(t.publish(b"world").unwrap(), 1);
        let ring = t.ring().unwrap();
        assert_eq!(ring.epoch(), t.epoch());
        let s = t.stats();
        assert_eq!((s.published, s.bytes, s.head), (2, 10, 2));
        assert!(s.ring_memory_bytes > 0);
    }

    #[test]
    fn stored_messages_carry_publish_time() {
        let t = Topic::new("a".into(), settings());
        let before = now_unix_nanos();
        t.publish(b"payload").unwrap();
        let mut reader = t.ring().unwrap().reader(lapwing_ring::Start::Oldest);
        let lapwing_ring::Peek::Message(m) = reader.peek() else {
            panic!("a message");
        };
        let (time, skip) = stored_head(m.first_word(), m.len());
        let mut payload = Vec::new();
        m.copy_into(skip, &mut payload).unwrap();
        assert_eq!(payload, b"payload");
        assert!(time >= before && time <= now_unix_nanos());
    }

    #[test]
    fn oversize_and_deleted_are_refused() {
        let t = Topic::new("a".into(), settings());
        assert!(matches!(
            t.publish(&[0; 1025]),
            Err(PublishError::TooLarge {
                len: 1025,
                max: 1024
            })
        ));
        t.publish(&[0; 1024]).unwrap();
        t.mark_deleted();
        assert!(matches!(t.publish(b"x"), Err(PublishError::Deleted)));
    }

    #[test]
    fn a_ring_over_the_memory_budget_is_refused_and_its_memory_given_back() {
        let budget = Budget::new(100 * 1024);
        let a = Topic::in_budget("a".into(), settings(), budget.clone(), true);
        let b = Topic::in_budget("b".into(), settings(), budget.clone(), true);
        a.publish(b"x").unwrap();
        assert_eq!(budget.used(), 64 * 1024);
        match b.publish(b"y") {
            Err(PublishError::Exhausted(Exhausted::RingMemory { limit, needed })) => {
                assert_eq!((limit, needed), (100 * 1024, 64 * 1024))
            }
            other => panic!("expected the budget to refuse, got {other:?}"),
        }
        assert_eq!(budget.refused(), 1);
        drop(a);
        assert_eq!(budget.used(), 0);
        b.publish(b"y").unwrap();
    }

    #[test]
    fn only_auto_created_topics_without_traffic_are_idle() {
        let t = Topic::in_budget("a".into(), settings(), Budget::unlimited(), true);
        let created = t.created_unix_nanos();
        assert!(t.idle_before(created + 10, created), "idle since creation");
        t.publish(b"x").unwrap();
        assert!(!t.idle_before(created + 20, created + 15), "a publish");
        assert!(!t.idle_before(created + 30, created + 15), "idle since 20");
        assert!(t.idle_before(created + 40, created + 25));
        t.counters.subscribers.fetch_add(1, Ordering::Relaxed);
        assert!(!t.idle_before(created + 50, created + 45), "a subscriber");
        let configured = Topic::new("c".into(), settings());
        assert!(!configured.idle_before(u64::MAX, u64::MAX));
    }

    #[test]
    fn epochs_differ_and_are_non_zero() {
        let a = Topic::new("a".into(), settings());
        let b = Topic::new("a".into(), settings());
        assert_ne!(a.epoch(), b.epoch());
        assert_ne!(a.epoch(), 0);
    }
}
