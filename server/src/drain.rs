//! Turning a topic's ring into the Delivery stream of one subscription,
//! independent of the transport.
//!
//! A [`Drain`] owns one ring reader. Each call to [`Drain::deliver`] reads
//! a batch (bounded in messages and bytes) and turns every ring event into
//! a [`DeliveryRef`] for a [`Deliver`] sink: a message becomes
//! `Message{seq, payload, publish time, epoch}`, a lap becomes
//! `Resync{missed, resume_seq, reason}`. The QUIC edge's sink takes
//! frames ([`Deliver::frames`]): each ring message is encoded in its batch
//! buffer, the frame's head first, then the payload copied there straight
//! from the ring (`lapwing_ring::Pending::copy_into`, rolled back with the
//! head if the ring's stamps reject the copy), then the tail; other events
//! it encodes with [`DeliveryRef::encode_frame`]. The gRPC edge takes
//! events ([`Drain::next_batch`]) and calls [`DeliveryRef::to_delivery`].
//!
//! This is where the delivery contract is kept: `delivered + missed` covers
//! every seq the cursor passes, exactly, and the reasons are right: the
//! first gap of a resume whose start is gone is `NOT_RETAINED`, a resume in
//! another epoch starts with `EPOCH_CHANGED`, laps are `LAPPED` (or
//! `SKIPPED` under skip-to-latest); under the disconnect policy a lap ends
//! the subscription instead ([`Step::Lagged`]).
//!
//! On a backbone topic (cluster mode) the drain speaks topic seqs, which
//! are the backbone's: ring seqs plus [`Topic::base`]. A resume older than
//! the ring's oldest is first replayed from the backbone ([`History`](crate::history::History)):
//! the drain reads the replay until its position reaches what the ring
//! holds (`next >= topic.oldest_retained()`), then reads the ring from
//! there; what the backbone no longer retains is a `NOT_RETAINED` resync,
//! exact. Holes the feed wrote into the ring (seqs the backbone had lost
//! before the feed reached them) are folded into `NOT_RETAINED` resyncs
//! too.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use lapwing_proto::v1::{self, LagPolicy, ResyncReason};
use lapwing_proto::MessageFrame;
use lapwing_ring::{Lagged, Peek, Reader, Resume, Start};
use tokio::sync::mpsc::{self, error::TryRecvError};

use crate::history::Replayed;
use crate::topic::{stored_head, Topic, HOLE_TIME};

/// Where a subscription starts (the transport-independent form of
/// `StartPosition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Only messages published from now on.
    #[default]
    Latest,
    /// Everything the ring still holds.
    Oldest,
    /// Resume at `next` of `epoch` (`After{epoch, seq}` on the wire is
    /// `next = seq + 1`; a wildcard's `TopicPosition` names `next` itself,
    /// so it can resume from seq 0).
    From {
        /// Epoch the client last saw.
        epoch: u64,
        /// The seq after the last one the client has.
        next: u64,
    },
}

impl StartAt {
    /// From the wire; an absent start means latest.
    pub fn from_proto(start: Option<&v1::StartPosition>) -> StartAt {
        use v1::start_position::Kind;
        match start.and_then(|s| s.kind.as_ref()) {
            None | Some(Kind::Latest(_)) => StartAt::Latest,
            Some(Kind::Oldest(_)) => StartAt::Oldest,
            Some(Kind::After(a)) => StartAt::From {
                epoch: a.epoch,
                next: a.seq.saturating_add(1),
            },
        }
    }
}

/// How much one batch may hold. One batch becomes one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Messages per batch.
    pub max_messages: usize,
    /// Payload bytes per batch (a single larger message still goes alone).
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        // ~256 messages per write is where QUIC fanout stops gaining (a
        // fanout prototype on this project's 2-core machine: 1 message per
        // write 1.7 M msgs/s, 8 -> 4.2 M, 256 -> 5.4 M). 48 KiB of payload
        // puts a full batch's frames in one 64 KiB block of the QUIC edge's
        // block pool (`frame_bytes`); 256 KiB batches, each a fresh
        // mapping faulted in and unmapped, delivered about 0.6x as much
        // per server CPU-second at 1 KiB (BENCHMARKS.md, "QUIC EFFICIENCY").
        BatchLimits {
            max_messages: 256,
            max_bytes: 48 * 1024,
        }
    }
}

impl BatchLimits {
    /// The encoded size of a full batch: its payload bytes plus, per
    /// message, what a topic-less `Delivery` frame adds around the
    /// payload (64 bytes counted; wildcard topic names or a single message
    /// larger than `max_bytes` can pass it).
    pub fn frame_bytes(&self) -> usize {
        self.max_bytes + self.max_messages * 64
    }
}

/// One event of a subscription, borrowing the payload from the drain's
/// batch. `topic` is empty on a subscription to one topic (the wire
/// leaves it out) and names the topic on a wildcard subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryRef<'a> {
    /// A message.
    Message {
        /// Its seq.
        seq: u64,
        /// The topic's epoch.
        epoch: u64,
        /// Server clock at publish.
        publish_time_unix_nanos: u64,
        /// The payload.
        payload: &'a [u8],
        /// The topic, on a wildcard subscription.
        topic: &'a str,
    },
    /// A gap, with its exact size and reason.
    Resync(ResyncRef<'a>),
    /// A wildcard subscription stopped following a deleted topic.
    Left {
        /// The topic.
        topic: &'a str,
    },
    /// A wildcard subscription began to follow a topic.
    Joined {
        /// The topic.
        topic: &'a str,
        /// Its epoch.
        epoch: u64,
        /// The first seq of it the subscription delivers (or resyncs to).
        start_seq: u64,
    },
}

/// A `Resync`, borrowing its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncRef<'a> {
    /// Messages not delivered.
    pub missed: u64,
    /// The seq delivery continues at.
    pub resume_seq: u64,
    /// Why.
    pub reason: ResyncReason,
    /// The epoch `resume_seq` belongs to.
    pub epoch: u64,
    /// The topic, on a wildcard subscription.
    pub topic: &'a str,
}

impl ResyncRef<'_> {
    /// The wire form.
    pub fn to_proto(&self) -> v1::Resync {
        v1::Resync {
            missed: self.missed,
            resume_seq: self.resume_seq,
            reason: self.reason as i32,
            epoch: self.epoch,
            topic: self.topic.to_owned(),
        }
    }
}

impl<'a> DeliveryRef<'a> {
    /// The same event, naming `topic` (a wildcard subscription's events).
    pub fn in_topic(self, topic: &'a str) -> DeliveryRef<'a> {
        match self {
            DeliveryRef::Message {
                seq,
                epoch,
                publish_time_unix_nanos,
                payload,
                ..
            } => DeliveryRef::Message {
                seq,
                epoch,
                publish_time_unix_nanos,
                payload,
                topic,
            },
            DeliveryRef::Resync(r) => DeliveryRef::Resync(ResyncRef { topic, ..r }),
            named @ (DeliveryRef::Joined { .. } | DeliveryRef::Left { .. }) => named,
        }
    }

    /// An owned `Delivery` (copies the payload).
    pub fn to_delivery(&self) -> v1::Delivery {
        use v1::delivery::Kind;
        let kind = match *self {
            DeliveryRef::Message {
                seq,
                epoch,
                publish_time_unix_nanos,
                payload,
                topic,
            } => Kind::Message(v1::Message {
                seq,
                payload: bytes::Bytes::copy_from_slice(payload),
                publish_time_unix_nanos,
                epoch,
                topic: topic.to_owned(),
            }),
            DeliveryRef::Resync(r) => Kind::Resync(r.to_proto()),
            DeliveryRef::Joined {
                topic,
                epoch,
                start_seq,
            } => Kind::Joined(v1::Joined {
                topic: topic.to_owned(),
                epoch,
                start_seq,
            }),
            DeliveryRef::Left { topic } => Kind::Left(v1::Left {
                topic: topic.to_owned(),
            }),
        };
        v1::Delivery { kind: Some(kind) }
    }

    /// About how many bytes [`DeliveryRef::encode_frame`] appends: exact
    /// to within the 64 bytes a message frame adds around its payload and
    /// topic; a generous guess for the rare other events.
    pub fn frame_len_hint(&self) -> usize {
        match *self {
            DeliveryRef::Message { payload, topic, .. } => payload.len() + topic.len() + 64,
            DeliveryRef::Joined { topic, .. } | DeliveryRef::Left { topic } => topic.len() + 64,
            DeliveryRef::Resync(r) => r.topic.len() + 128,
        }
    }

    /// Appends this event as one `Delivery` frame. Messages are encoded
    /// straight from the borrowed payload (no intermediate copy); the bytes
    /// are identical to what prost produces for the same `Delivery`.
    pub fn encode_frame(&self, out: &mut BytesMut) {
        match *self {
            DeliveryRef::Message {
                seq,
                epoch,
                publish_time_unix_nanos,
                payload,
                topic,
            } => lapwing_proto::encode_message_frame(
                out,
                seq,
                epoch,
                publish_time_unix_nanos,
                topic,
                payload,
            ),
            DeliveryRef::Resync(_) | DeliveryRef::Joined { .. } | DeliveryRef::Left { .. } => {
                lapwing_proto::encode_frame(&self.to_delivery(), out)
            }
        }
    }
}

/// Where a drain's events go ([`Drain::deliver`]).
pub trait Deliver {
    /// An event. A message comes here (its payload borrowed) unless
    /// [`Deliver::frames`] gave a buffer for it.
    fn event(&mut self, event: DeliveryRef<'_>);

    /// The buffer the frame of the next message (about `need` bytes)
    /// goes in, for a sink that sends frames: the drain then encodes it
    /// there, the payload copied straight from the ring, and reports it
    /// with [`Deliver::framed`] instead of [`Deliver::event`]. `None` (the
    /// default) asks for events.
    fn frames(&mut self, _need: usize) -> Option<&mut BytesMut> {
        None
    }

    /// A message was encoded into [`Deliver::frames`]' buffer.
    fn framed(&mut self, _message: Framed) {}

    /// Whether frames name their topic (a wildcard subscription's do).
    fn named(&self) -> bool {
        false
    }
}

/// A message a drain encoded into a sink's frame buffer, for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    /// Server clock at publish.
    pub publish_time_unix_nanos: u64,
    /// Payload bytes.
    pub payload_len: usize,
}

/// A sink of events only: every message as a [`DeliveryRef`], its payload
/// borrowed.
pub struct Events<F>(pub F);

impl<F> std::fmt::Debug for Events<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl<F: FnMut(DeliveryRef<'_>)> Deliver for Events<F> {
    fn event(&mut self, event: DeliveryRef<'_>) {
        (self.0)(event)
    }
}

/// What one call to [`Drain::deliver`] (or [`Drain::next_batch`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Emitted this many events; call again (there may be more).
    Delivered {
        /// Messages emitted.
        messages: usize,
        /// Resyncs emitted.
        resyncs: usize,
    },
    /// Nothing new: wait with [`Drain::wait`].
    Idle,
    /// Lapped under the disconnect policy: the subscription is over (events
    /// before the lap in this batch were emitted).
    Lagged {
        /// Messages lost at the lap.
        missed: u64,
    },
    /// The topic was deleted: the subscription is over.
    TopicDeleted,
    /// A wildcard subscription would have to follow more than `limit`
    /// topics: it is over (`limits.max_topics_per_wildcard`).
    TooManyTopics {
        /// The limit.
        limit: u32,
    },
    /// A replay from the backbone could not go on: the subscription is
    /// over, with a retryable UNAVAILABLE ([`Drain::failure`] says why).
    HistoryFailed,
}

/// Per-subscription accounting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrainStats {
    /// Messages emitted.
    pub delivered: u64,
    /// Messages reported missed in resyncs.
    pub missed: u64,
    /// Resyncs emitted.
    pub resyncs: u64,
}

#[derive(Debug)]
enum Cursor {
    /// The topic has no ring yet (nothing published in this epoch, or
    /// nothing fed since this node began to follow a backbone topic):
    /// start at topic seq `start` once it has one.
    Waiting {
        start: u64,
    },
    /// Replaying a backbone topic from its history; `next` is the topic
    /// seq expected next.
    Replaying {
        replay: mpsc::Receiver<Replayed>,
        next: u64,
    },
    Reading(Reader),
}

/// See the module docs.
#[derive(Debug)]
pub struct Drain {
    topic: Arc<Topic>,
    cursor: Cursor,
    /// Where a message is copied to for a sink that takes events, not
    /// frames; grows to the largest message and stays.
    scratch: Vec<u8>,
    policy: LagPolicy,
    start_seq: u64,
    /// A resync to emit before anything else (epoch changed).
    pending: Option<ResyncRef<'static>>,
    /// Reason for a gap met as the very first event (a resume whose start
    /// is no longer held is NOT_RETAINED, not LAPPED).
    first_lag_reason: Option<ResyncReason>,
    stats: DrainStats,
    /// How the subscription ended, once it has: every later call returns it.
    ended: Option<Step>,
    /// Why a replay failed ([`Step::HistoryFailed`]).
    failure: Option<String>,
}

impl Drain {
    /// A subscription to `topic` from `start` with lag `policy`.
    pub fn new(topic: Arc<Topic>, start: StartAt, policy: LagPolicy) -> Drain {
        let epoch = topic.epoch();
        let base = topic.base();
        let mut pending = None;
        let mut first_lag_reason = None;
        let epoch_changed = |missed_and_resume: u64| ResyncRef {
            missed: missed_and_resume,
            resume_seq: missed_and_resume,
            reason: ResyncReason::EpochChanged,
            epoch,
            topic: "",
        };
        let ring = topic.ring();
        let cursor = match start {
            StartAt::From { epoch: e, next } if e == epoch => {
                // A seq the topic never reached is a confused client:
                // resume at the head rather than wait for (and silently
                // skip up to) it. A backbone topic's head is the
                // backbone's, not how far this node's feed has got: a
                // client failing over from a node whose feed was ahead
                // resumes past this ring's head and waits there for the
                // feed (clamping it to the ring's head would deliver
                // what it has again).
                let next = next.min(topic.known_head());
                match (topic.history(), ring) {
                    (Some(history), _) if next < topic.oldest_retained() => Cursor::Replaying {
                        replay: history.replay(&topic, next),
                        next,
                    },
                    (_, None) => Cursor::Waiting { start: next },
                    (_, Some(ring)) => {
                        // A lap before the first read: on a single node
                        // the seqs are gone for good; on a backbone topic
                        // only from this ring (the backbone may hold
                        // them), so it is the ring's lap, LAPPED.
                        if !topic.is_backbone() {
                            first_lag_reason = Some(ResyncReason::NotRetained);
                        }
                        Cursor::Reading(new_reader(
                            ring,
                            Start::At(next.saturating_sub(base)),
                            policy,
                        ))
                    }
                }
            }
            StartAt::From { .. } => {
                // Accounting restarts at seq 0 of this epoch.
                let oldest = topic.oldest_retained();
                pending = Some(epoch_changed(oldest));
                match ring {
                    None => Cursor::Waiting { start: oldest },
                    Some(ring) => Cursor::Reading(new_reader(
                        ring,
                        Start::At(oldest.saturating_sub(base)),
                        policy,
                    )),
                }
            }
            // A backbone topic's oldest is the backbone's: replayed up to
            // the ring.
            StartAt::Oldest
                if topic
                    .known_first()
                    .is_some_and(|first| first < topic.oldest_retained()) =>
            {
                let first = topic.known_first().unwrap_or(0);
                match topic.history() {
                    Some(history) => Cursor::Replaying {
                        replay: history.replay(&topic, first),
                        next: first,
                    },
                    None => Cursor::Waiting { start: first },
                }
            }
            StartAt::Latest | StartAt::Oldest => match ring {
                // Nothing in the ring yet: both are the head.
                None => Cursor::Waiting {
                    start: topic.head(),
                },
                Some(ring) => {
                    let at = if start == StartAt::Latest {
                        Start::Latest
                    } else {
                        Start::Oldest
                    };
                    Cursor::Reading(new_reader(ring, at, policy))
                }
            },
        };
        let start_seq = match (&pending, &cursor) {
            // After an epoch change the accounting restarts at seq 0.
            (Some(_), _) => 0,
            (None, Cursor::Waiting { start }) => *start,
            (None, Cursor::Replaying { next, .. }) => *next,
            (None, Cursor::Reading(r)) => base + r.next_seq(),
        };
        topic.counters.subscribers.fetch_add(1, Ordering::Relaxed);
        Drain {
            topic,
            cursor,
            scratch: Vec::new(),
            policy,
            start_seq,
            pending,
            first_lag_reason,
            stats: DrainStats::default(),
            ended: None,
            failure: None,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &Arc<Topic> {
        &self.topic
    }

    /// The epoch every Message of this subscription carries.
    pub fn epoch(&self) -> u64 {
        self.topic.epoch()
    }

    /// `SubscribeOk.start_seq`: the first seq this subscription delivers or
    /// resyncs to; 0 when it starts with an EPOCH_CHANGED resync.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }

    /// Accounting so far.
    pub fn stats(&self) -> DrainStats {
        self.stats
    }

    /// Why a replay from the backbone failed, once it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Messages published and not yet read (0 past the end).
    pub fn lag(&self) -> u64 {
        let next = match &self.cursor {
            Cursor::Waiting { start } => *start,
            Cursor::Replaying { next, .. } => *next,
            Cursor::Reading(r) => self.topic.base() + r.next_seq(),
        };
        self.topic.head().saturating_sub(next)
    }

    /// Whether [`Drain::deliver`] has something to do.
    pub fn has_new(&self) -> bool {
        if self.ended.is_some() || self.pending.is_some() || self.topic.is_deleted() {
            return true;
        }
        match &self.cursor {
            Cursor::Waiting { .. } => self.topic.ring().is_some(),
            Cursor::Replaying { replay, next } => {
                !replay.is_empty() || replay.is_closed() || *next >= self.topic.oldest_retained()
            }
            Cursor::Reading(r) => r.has_new(),
        }
    }

    /// Waits until [`Drain::has_new`]. Cancel-safe; costs the publishers
    /// nothing while this subscription is busy elsewhere.
    pub async fn wait(&self) {
        self.topic.wakeup().wait_until(|| self.has_new()).await;
    }

    /// Reads one batch and emits its events in order, each message's
    /// payload borrowed ([`Drain::deliver`] with [`Events`]).
    pub fn next_batch(&mut self, limits: BatchLimits, emit: impl FnMut(DeliveryRef<'_>)) -> Step {
        self.deliver(limits, &mut Events(emit))
    }

    /// Reads one batch and hands its events to `sink` in order. A sink
    /// that sends frames ([`Deliver::frames`]) gets each message of the
    /// ring encoded in its buffer, the payload copied there straight from
    /// the ring: one copy per message per subscriber fewer than encoding
    /// it from a borrowed payload.
    pub fn deliver<D: Deliver + ?Sized>(&mut self, limits: BatchLimits, sink: &mut D) -> Step {
        if let Some(end) = self.ended {
            return end;
        }
        if self.topic.is_deleted() {
            self.ended = Some(Step::TopicDeleted);
            return Step::TopicDeleted;
        }
        let epoch = self.topic.epoch();
        let base = self.topic.base();
        let mut messages = 0;
        let mut resyncs = 0;
        if let Some(r) = self.pending.take() {
            self.count_resync(r.missed);
            sink.event(DeliveryRef::Resync(r));
            resyncs += 1;
        }
        if let Cursor::Replaying { .. } = self.cursor {
            match self.replay(limits, sink) {
                Ok((m, r)) => {
                    messages += m;
                    resyncs += r;
                }
                Err(end) => return end,
            }
            if let Cursor::Replaying { .. } = self.cursor {
                return delivered_or_idle(messages, resyncs);
            }
        }
        if let Cursor::Waiting { start } = self.cursor {
            match self.topic.ring() {
                Some(ring) => {
                    let at = Start::At(start.saturating_sub(base));
                    self.cursor = Cursor::Reading(new_reader(ring, at, self.policy))
                }
                None => return delivered_or_idle(messages, resyncs),
            }
        }
        let Cursor::Reading(reader) = &mut self.cursor else {
            return delivered_or_idle(messages, resyncs);
        };
        // A wildcard's member names its topic in every frame.
        let label = if sink.named() { self.topic.name() } else { "" };
        let mut laps = Laps {
            topic: &self.topic,
            stats: &mut self.stats,
            first_reason: &mut self.first_lag_reason,
            policy: self.policy,
            base,
            epoch,
            holes: None,
        };
        // Bounded like `Reader::read_batch`: events (a lap counts as one)
        // and stored bytes; the first message goes whatever its size.
        let (mut events, mut bytes, mut took) = (0, 0usize, false);
        while events < limits.max_messages {
            if took && bytes >= limits.max_bytes {
                break;
            }
            let m = match reader.peek() {
                Peek::Empty => break,
                Peek::Lagged(lag) => {
                    events += 1;
                    match laps.resync(lag, sink) {
                        Ok(n) => resyncs += n,
                        Err(end) => {
                            self.ended = Some(end);
                            return end;
                        }
                    }
                    continue;
                }
                Peek::Message(m) => m,
            };
            let len = m.len();
            if took && len > limits.max_bytes - bytes {
                break;
            }
            events += 1;
            bytes += len;
            took = true;
            let seq = base + m.seq();
            let (publish_time_unix_nanos, skip) = stored_head(m.first_word(), len);
            if publish_time_unix_nanos == HOLE_TIME {
                // Nothing to copy: a hole is its time alone, an inline
                // entry, so the checked header read was the whole read and
                // this copy of no bytes only moves the cursor (it cannot
                // fail).
                let _ = m.copy_into(len, &mut self.scratch);
                laps.hole(seq);
                continue;
            }
            resyncs += laps.flush_holes(sink);
            let copied = match sink.frames(len + label.len() + 64) {
                Some(out) => {
                    let frame =
                        MessageFrame::new(seq, epoch, publish_time_unix_nanos, label, len - skip);
                    let mark = out.len();
                    out.reserve(frame.len());
                    frame.put_head(out);
                    match m.copy_into(skip, out) {
                        Ok(()) => {
                            frame.put_tail(out);
                            sink.framed(Framed {
                                publish_time_unix_nanos,
                                payload_len: len - skip,
                            });
                            Ok(())
                        }
                        Err(lag) => {
                            out.truncate(mark);
                            Err(lag)
                        }
                    }
                }
                None => {
                    self.scratch.clear();
                    m.copy_into(skip, &mut self.scratch).map(|()| {
                        sink.event(DeliveryRef::Message {
                            seq,
                            epoch,
                            publish_time_unix_nanos,
                            payload: &self.scratch,
                            topic: "",
                        })
                    })
                }
            };
            match copied {
                Ok(()) => {
                    // A message first: the start was held after all.
                    laps.first_reason.take();
                    laps.stats.delivered += 1;
                    messages += 1;
                }
                // Overwritten while it was copied: the ring has moved the
                // cursor past the lap.
                Err(lag) => match laps.resync(lag, sink) {
                    Ok(n) => resyncs += n,
                    Err(end) => {
                        self.ended = Some(end);
                        return end;
                    }
                },
            }
        }
        resyncs += laps.flush_holes(sink);
        delivered_or_idle(messages, resyncs)
    }

    /// Emits what the replay has ready, up to one batch; switches to the
    /// ring once the position is one the ring holds. Returns (messages,
    /// resyncs) emitted, or how the subscription ended.
    fn replay<D: Deliver + ?Sized>(
        &mut self,
        limits: BatchLimits,
        sink: &mut D,
    ) -> Result<(usize, usize), Step> {
        let epoch = self.topic.epoch();
        let (mut messages, mut resyncs, mut bytes) = (0, 0, 0);
        while messages < limits.max_messages && bytes < limits.max_bytes {
            let Cursor::Replaying { replay, next } = &mut self.cursor else {
                break;
            };
            if *next >= self.topic.oldest_retained() {
                // The ring holds it (or will: a ring not yet created starts
                // at `base`): read on from there. A lap in between is the
                // ring's, reported LAPPED.
                let start = *next;
                self.cursor = match self.topic.ring() {
                    None => Cursor::Waiting { start },
                    Some(ring) => Cursor::Reading(new_reader(
                        ring,
                        Start::At(start.saturating_sub(self.topic.base())),
                        self.policy,
                    )),
                };
                break;
            }
            let event = match replay.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    Replayed::Failed("the backbone replay ended early".into())
                }
            };
            match event {
                Replayed::Message {
                    seq,
                    publish_time_unix_nanos,
                    payload,
                } => {
                    if seq < *next {
                        continue; // never expected; a duplicate is not delivered twice
                    }
                    *next = seq + 1;
                    bytes += payload.len();
                    sink.event(DeliveryRef::Message {
                        seq,
                        epoch,
                        publish_time_unix_nanos,
                        payload: &payload,
                        topic: "",
                    });
                    self.stats.delivered += 1;
                    messages += 1;
                }
                Replayed::NotRetained {
                    mut missed,
                    mut resume_seq,
                } => {
                    // The backbone lost them, but this node's ring may
                    // still hold the end of the range (a ring that keeps
                    // more than the stream retains): report only what
                    // neither has, then read the ring.
                    let ring_oldest = self.topic.oldest_retained();
                    if ring_oldest > *next && ring_oldest < resume_seq {
                        missed = ring_oldest - *next;
                        resume_seq = ring_oldest;
                    }
                    *next = resume_seq;
                    self.count_resync(missed);
                    sink.event(DeliveryRef::Resync(ResyncRef {
                        missed,
                        resume_seq,
                        reason: ResyncReason::NotRetained,
                        epoch,
                        topic: "",
                    }));
                    resyncs += 1;
                }
                Replayed::Failed(reason) => {
                    self.failure = Some(reason);
                    self.ended = Some(Step::HistoryFailed);
                    return Err(Step::HistoryFailed);
                }
            }
        }
        Ok((messages, resyncs))
    }

    fn count_resync(&mut self, missed: u64) {
        count_resync(&self.topic, &mut self.stats, missed);
    }
}

/// Counts a resync of `missed` messages, in the subscription's stats and
/// the topic's counters.
fn count_resync(topic: &Topic, stats: &mut DrainStats, missed: u64) {
    stats.missed += missed;
    stats.resyncs += 1;
    let c = &topic.counters;
    c.resyncs_sent.fetch_add(1, Ordering::Relaxed);
    c.messages_missed.fetch_add(missed, Ordering::Relaxed);
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.topic
            .counters
            .subscribers
            .fetch_sub(1, Ordering::Relaxed);
    }
}

fn new_reader(ring: &Arc<lapwing_ring::Ring>, start: Start, policy: LagPolicy) -> Reader {
    let mut reader = ring.reader(start);
    if policy == LagPolicy::SkipToLatest {
        reader.set_resume(Resume::Newest);
    }
    reader
}

/// A batch's gaps, as the drain meets them: a lap becomes a resync with
/// its reason (or, under the disconnect policy, the end), and a run of
/// holes (seqs the backbone had lost before the feed reached them) one
/// NOT_RETAINED resync before the next event.
struct Laps<'a> {
    topic: &'a Topic,
    stats: &'a mut DrainStats,
    /// The reason of a lap met as the very first event (taken by the
    /// first event, whatever it is).
    first_reason: &'a mut Option<ResyncReason>,
    policy: LagPolicy,
    base: u64,
    epoch: u64,
    /// The run of holes not yet reported: (first seq, count).
    holes: Option<(u64, u64)>,
}

impl Laps<'_> {
    /// Notes the hole at topic seq `seq`.
    fn hole(&mut self, seq: u64) {
        self.first_reason.take();
        match &mut self.holes {
            Some((_, n)) => *n += 1,
            None => self.holes = Some((seq, 1)),
        }
    }

    /// Emits the run of holes as one resync, if there is one; returns the
    /// resyncs emitted.
    fn flush_holes<D: Deliver + ?Sized>(&mut self, sink: &mut D) -> usize {
        let Some((first, missed)) = self.holes.take() else {
            return 0;
        };
        count_resync(self.topic, self.stats, missed);
        sink.event(DeliveryRef::Resync(ResyncRef {
            missed,
            resume_seq: first + missed,
            reason: ResyncReason::NotRetained,
            epoch: self.epoch,
            topic: "",
        }));
        1
    }

    /// Emits the resync of a lap (after any holes before it); returns the
    /// resyncs emitted, or the end of the subscription under the
    /// disconnect policy.
    fn resync<D: Deliver + ?Sized>(&mut self, lag: Lagged, sink: &mut D) -> Result<usize, Step> {
        let holes = self.flush_holes(sink);
        let reason = match (self.first_reason.take(), self.policy) {
            (Some(reason), _) => reason,
            (None, LagPolicy::Disconnect) => {
                self.stats.missed += lag.missed;
                self.topic
                    .counters
                    .messages_missed
                    .fetch_add(lag.missed, Ordering::Relaxed);
                return Err(Step::Lagged { missed: lag.missed });
            }
            (None, LagPolicy::SkipToLatest) => ResyncReason::Skipped,
            (None, LagPolicy::ResumeOldest) => ResyncReason::Lapped,
        };
        count_resync(self.topic, self.stats, lag.missed);
        sink.event(DeliveryRef::Resync(ResyncRef {
            missed: lag.missed,
            resume_seq: self.base + lag.resume_seq,
            reason,
            epoch: self.epoch,
            topic: "",
        }));
        Ok(holes + 1)
    }
}

fn delivered_or_idle(messages: usize, resyncs: usize) -> Step {
    if messages + resyncs == 0 {
        Step::Idle
    } else {
        Step::Delivered { messages, resyncs }
    }
}

/// A sink that sends frames, as the QUIC edge's does; `before_copy` runs
/// each time the drain asks for room, which is after it read a message's
/// header and before it copies the payload.
#[cfg(test)]
pub(crate) struct FrameSink<F: FnMut() = fn()> {
    pub(crate) out: BytesMut,
    pub(crate) framed: usize,
    pub(crate) before_copy: F,
}

#[cfg(test)]
impl FrameSink {
    pub(crate) fn new() -> Self {
        FrameSink {
            out: BytesMut::new(),
            framed: 0,
            before_copy: || {},
        }
    }
}

#[cfg(test)]
impl<F: FnMut()> Deliver for FrameSink<F> {
    fn event(&mut self, event: DeliveryRef<'_>) {
        event.encode_frame(&mut self.out);
    }

    fn frames(&mut self, _need: usize) -> Option<&mut BytesMut> {
        (self.before_copy)();
        Some(&mut self.out)
    }

    fn framed(&mut self, _message: Framed) {
        self.framed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use crate::topic::TopicSettings;
    use bytes::Bytes;
    use lapwing_proto::FrameCodec;
    use tokio_util::codec::Decoder;

    fn topic(ring_bytes: usize) -> Arc<Topic> {
        Arc::new(Topic::new(
            "t".into(),
            TopicSettings {
                ring_bytes,
                max_message_bytes: 256,
            },
        ))
    }

    fn publish_n(t: &Topic, n: u64) {
        for _ in 0..n {
            let seq = t.head();
            t.publish(format!("m{seq}").as_bytes()).unwrap();
        }
    }

    /// Everything a client would observe, and the accounting check.
    #[derive(Debug, Default)]
    struct Observed {
        next: Option<u64>,
        seqs: Vec<u64>,
        resyncs: Vec<v1::Resync>,
        missed: u64,
    }

    impl Observed {
        fn take(&mut self, d: DeliveryRef<'_>) {
            match d {
                DeliveryRef::Message { seq, payload, .. } => {
                    if let Some(next) = self.next {
                        assert_eq!(seq, next, "gap or duplicate without a resync");
                    }
                    assert_eq!(payload, format!("m{seq}").as_bytes(), "payload of {seq}");
                    self.seqs.push(seq);
                    self.next = Some(seq + 1);
                }
                DeliveryRef::Resync(r) => {
                    if let (Some(next), false) = (self.next, r.reason == ResyncReason::EpochChanged)
                    {
                        assert_eq!(r.resume_seq, next + r.missed, "resync accounting");
                    }
                    self.missed += r.missed;
                    self.next = Some(r.resume_seq);
                    self.resyncs.push(r.to_proto());
                }
                DeliveryRef::Joined { .. } | DeliveryRef::Left { .. } => {
                    panic!("a drain of one topic joins and leaves nothing")
                }
            }
        }

        fn drain(&mut self, d: &mut Drain, limits: BatchLimits) -> Step {
            loop {
                match d.next_batch(limits, |e| self.take(e)) {
                    Step::Delivered { .. } => continue,
                    other => return other,
                }
            }
        }
    }

    /// A backbone's history for tests: the replay of topic seq `next` on
    /// is what `script` says, sent at once (the channel is large enough).
    #[derive(Debug)]
    struct ScriptedHistory {
        script: Vec<Replayed>,
        asked: std::sync::Mutex<Vec<u64>>,
    }

    impl History for ScriptedHistory {
        fn replay(&self, _topic: &Arc<Topic>, next: u64) -> mpsc::Receiver<Replayed> {
            self.asked.lock().unwrap().push(next);
            let (tx, rx) = mpsc::channel(self.script.len().max(1));
            for event in &self.script {
                tx.try_send(event.clone()).unwrap();
            }
            rx
        }
    }

    /// A backbone topic whose ring starts at topic seq `base`.
    fn backbone_topic(
        base: u64,
        ring_bytes: usize,
        script: Vec<Replayed>,
    ) -> (Arc<Topic>, Arc<ScriptedHistory>) {
        let history = Arc::new(ScriptedHistory {
            script,
            asked: Default::default(),
        });
        let settings = TopicSettings {
            ring_bytes,
            max_message_bytes: 256,
        };
        let t = Topic::from_backbone(
            "t".into(),
            settings,
            crate::budget::Budget::unlimited(),
            7,
            base,
            history.clone(),
        );
        (Arc::new(t), history)
    }

    /// What the feed writes: the backbone's messages from the ring's head on.
    fn feed_n(t: &Topic, n: u64) {
        for _ in 0..n {
            let seq = t.head();
            assert_eq!(
                t.write_from_backbone(1, format!("m{seq}").as_bytes())
                    .unwrap(),
                seq
            );
        }
    }

    fn replayed(seq: u64) -> Replayed {
        Replayed::Message {
            seq,
            publish_time_unix_nanos: 1,
            payload: Bytes::from(format!("m{seq}")),
        }
    }

    #[test]
    fn a_backbone_topic_speaks_the_backbone_seqs() {
        let (t, history) = backbone_topic(1000, 64 * 1024, Vec::new());
        assert_eq!((t.head(), t.oldest_retained()), (1000, 1000));
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        assert_eq!(d.start_seq(), 1000, "latest is the backbone's head");
        feed_n(&t, 5);
        let mut o = Observed::default();
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.seqs, (1000..1005).collect::<Vec<_>>());
        // A resume the ring holds reads the ring; nothing asks the backbone.
        let mut r = Drain::new(
            t.clone(),
            StartAt::From {
                epoch: 7,
                next: 1002,
            },
            LagPolicy::ResumeOldest,
        );
        let mut o = Observed::default();
        o.drain(&mut r, BatchLimits::default());
        assert_eq!(o.seqs, vec![1002, 1003, 1004]);
        assert!(history.asked.lock().unwrap().is_empty());
    }

    #[test]
    fn a_resume_before_the_ring_is_replayed_then_joins_the_ring() {
        // The backbone lost seqs 0..3; it holds 3.. ; the ring begins at 10.
        let mut script = vec![Replayed::NotRetained {
            missed: 2,
            resume_seq: 3,
        }];
        script.extend((3..10).map(replayed));
        // The replay goes on past the ring's start; the drain must switch
        // to the ring at 10 and never deliver the replay's 10 and 11 too.
        script.extend((10..12).map(replayed));
        let (t, history) = backbone_topic(10, 64 * 1024, script);
        feed_n(&t, 4); // ring: 10..14
        let mut d = Drain::new(
            t.clone(),
            StartAt::From { epoch: 7, next: 1 },
            LagPolicy::ResumeOldest,
        );
        assert_eq!(d.start_seq(), 1);
        assert!(d.has_new());
        let mut o = Observed {
            next: Some(1),
            ..Observed::default()
        };
        assert_eq!(o.drain(&mut d, BatchLimits::default()), Step::Idle);
        assert_eq!(*history.asked.lock().unwrap(), vec![1]);
        assert_eq!(
            o.seqs,
            (3..14).collect::<Vec<_>>(),
            "replayed 3..10, then the ring"
        );
        assert_eq!(o.resyncs.len(), 1);
        assert_eq!(o.resyncs[0].reason, ResyncReason::NotRetained as i32);
        assert_eq!((o.resyncs[0].missed, o.resyncs[0].resume_seq), (2, 3));
        assert_eq!(
            d.stats(),
            DrainStats {
                delivered: 11,
                missed: 2,
                resyncs: 1
            }
        );
        feed_n(&t, 2);
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.seqs.last(), Some(&15), "and on, live");
    }

    #[test]
    fn a_resume_past_this_nodes_feed_waits_for_it_instead_of_repeating() {
        // verification/cluster.tla's finding: the client has seqs up to 15
        // from another node whose feed was ahead; this node's feed is at 14.
        let (t, _) = backbone_topic(10, 64 * 1024, Vec::new());
        feed_n(&t, 4); // ring: 10..14
        t.raise_known_head(20); // the backbone's head, looked up
        let mut d = Drain::new(
            t.clone(),
            StartAt::From { epoch: 7, next: 16 },
            LagPolicy::ResumeOldest,
        );
        assert_eq!(d.start_seq(), 16, "not clamped to this node's head");
        let mut o = Observed {
            next: Some(16),
            ..Observed::default()
        };
        assert_eq!(o.drain(&mut d, BatchLimits::default()), Step::Idle);
        feed_n(&t, 4); // 14..18
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.seqs, vec![16, 17], "no seq delivered twice");
        // Past the backbone's head too: a confused client, clamped.
        let d = Drain::new(
            t.clone(),
            StartAt::From { epoch: 7, next: 99 },
            LagPolicy::ResumeOldest,
        );
        assert_eq!(d.start_seq(), 20);
    }

    #[test]
    fn a_lap_before_the_first_read_of_a_backbone_topic_is_the_rings() {
        // The backbone still holds what this ring lapped: LAPPED, not
        // NOT_RETAINED (verification/cluster.tla's second finding).
        let (t, _) = backbone_topic(0, 4 * 1024, Vec::new());
        feed_n(&t, 2);
        let mut d = Drain::new(
            t.clone(),
            StartAt::From { epoch: 7, next: 1 },
            LagPolicy::ResumeOldest,
        );
        feed_n(&t, 200);
        let mut o = Observed {
            next: Some(1),
            ..Observed::default()
        };
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.resyncs[0].reason, ResyncReason::Lapped as i32);
        assert_eq!(o.seqs.len() as u64 + o.missed, 201);
    }

    #[test]
    fn what_the_backbone_lost_and_the_ring_holds_is_delivered_from_the_ring() {
        // The stream retains 12.. ; this node's ring still holds 10..14.
        // A resume at 2 misses 2..10 only (verification/cluster.tla's third
        // finding), then reads 10.. from the ring.
        let script = vec![
            Replayed::NotRetained {
                missed: 10,
                resume_seq: 12,
            },
            replayed(12),
        ];
        let (t, _) = backbone_topic(10, 64 * 1024, script);
        feed_n(&t, 4);
        let mut d = Drain::new(
            t.clone(),
            StartAt::From { epoch: 7, next: 2 },
            LagPolicy::ResumeOldest,
        );
        let mut o = Observed {
            next: Some(2),
            ..Observed::default()
        };
        o.drain(&mut d, BatchLimits::default());
        let gaps: Vec<(u64, u64)> = o.resyncs.iter().map(|r| (r.missed, r.resume_seq)).collect();
        assert_eq!(gaps, vec![(8, 10)]);
        assert_eq!(o.seqs, vec![10, 11, 12, 13]);
    }

    #[test]
    fn oldest_on_a_backbone_topic_is_the_backbones_oldest() {
        let (t, history) = backbone_topic(10, 64 * 1024, (3..12).map(replayed).collect());
        feed_n(&t, 4); // ring: 10..14
        t.note_known_first(3);
        let mut d = Drain::new(t.clone(), StartAt::Oldest, LagPolicy::ResumeOldest);
        assert_eq!(d.start_seq(), 3);
        let mut o = Observed::default();
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(*history.asked.lock().unwrap(), vec![3]);
        assert_eq!(o.seqs, (3..14).collect::<Vec<_>>());
        assert!(o.resyncs.is_empty());
    }

    #[test]
    fn a_replay_that_fails_ends_the_subscription_with_its_reason() {
        let script = vec![replayed(0), Replayed::Failed("backbone gone".into())];
        let (t, _) = backbone_topic(10, 64 * 1024, script);
        let mut d = Drain::new(
            t,
            StartAt::From { epoch: 7, next: 0 },
            LagPolicy::ResumeOldest,
        );
        let mut o = Observed::default();
        assert_eq!(o.drain(&mut d, BatchLimits::default()), Step::HistoryFailed);
        assert_eq!(o.seqs, vec![0]);
        assert_eq!(d.failure(), Some("backbone gone"));
    }

    #[test]
    fn holes_are_not_retained_resyncs_with_exact_counts() {
        let (t, _) = backbone_topic(100, 64 * 1024, Vec::new());
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        feed_n(&t, 2); // 100, 101
        t.write_holes(3).unwrap(); // 102..105 gone from the backbone
        feed_n(&t, 1); // 105
        t.write_holes(2).unwrap(); // 106, 107: the batch ends with a hole run
        let mut o = Observed {
            next: Some(100),
            ..Observed::default()
        };
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.seqs, vec![100, 101, 105]);
        let gaps: Vec<(u64, u64, i32)> = o
            .resyncs
            .iter()
            .map(|r| (r.missed, r.resume_seq, r.reason))
            .collect();
        let not_retained = ResyncReason::NotRetained as i32;
        assert_eq!(gaps, vec![(3, 105, not_retained), (2, 108, not_retained)]);
        assert_eq!(d.stats().missed + d.stats().delivered, 8);
    }

    #[test]
    fn latest_delivers_only_new_messages_contiguously() {
        let t = topic(64 * 1024);
        publish_n(&t, 5);
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        assert_eq!(d.start_seq(), 5);
        assert!(!d.has_new());
        publish_n(&t, 10);
        assert!(d.has_new());
        let mut o = Observed::default();
        assert_eq!(o.drain(&mut d, BatchLimits::default()), Step::Idle);
        assert_eq!(o.seqs, (5..15).collect::<Vec<_>>());
        assert_eq!(d.stats().delivered, 10);
    }

    #[test]
    fn batches_respect_the_message_limit() {
        let t = topic(64 * 1024);
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        publish_n(&t, 25);
        let limits = BatchLimits {
            max_messages: 10,
            max_bytes: 1 << 20,
        };
        let mut sizes = Vec::new();
        while let Step::Delivered { messages, .. } = d.next_batch(limits, |_| {}) {
            sizes.push(messages);
        }
        assert_eq!(sizes, vec![10, 10, 5]);
    }

    #[test]
    fn lapped_subscriber_gets_exact_resync() {
        let t = topic(4 * 1024); // 32 headers
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        publish_n(&t, 1); // allocate the ring, seq 0
        let mut o = Observed::default();
        o.drain(&mut d, BatchLimits::default());
        publish_n(&t, 200);
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.resyncs.len(), 1, "{:?}", o.resyncs);
        assert_eq!(o.resyncs[0].reason, ResyncReason::Lapped as i32);
        assert_eq!(o.resyncs[0].epoch, t.epoch());
        assert_eq!(o.seqs.len() as u64 + o.missed, 201, "delivered + missed");
        assert_eq!(*o.seqs.last().unwrap(), 200);
        let s = t.stats();
        assert_eq!((s.resyncs_sent, s.messages_missed), (1, o.missed));
        assert_eq!(d.stats().missed, o.missed);
    }

    #[test]
    fn skip_to_latest_jumps_to_the_newest() {
        let t = topic(4 * 1024);
        publish_n(&t, 1);
        let mut d = Drain::new(t.clone(), StartAt::Oldest, LagPolicy::SkipToLatest);
        publish_n(&t, 199);
        let mut o = Observed::default();
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.resyncs[0].reason, ResyncReason::Skipped as i32);
        assert_eq!(o.seqs.len() as u64 + o.missed, 200);
        assert!(o.seqs.len() < 5, "skipped to the newest: {:?}", o.seqs);
        assert_eq!(*o.seqs.last().unwrap(), 199);
    }

    #[test]
    fn disconnect_policy_ends_on_lap() {
        let t = topic(4 * 1024);
        publish_n(&t, 1);
        let mut d = Drain::new(t.clone(), StartAt::Oldest, LagPolicy::Disconnect);
        publish_n(&t, 199);
        let mut o = Observed::default();
        match o.drain(&mut d, BatchLimits::default()) {
            Step::Lagged { missed } => assert!(missed > 0),
            other => panic!("expected Lagged, got {other:?}"),
        }
        assert!(o.resyncs.is_empty());
        // The end stays what it was: a lag, not a deleted topic.
        assert!(matches!(
            d.next_batch(BatchLimits::default(), |_| {}),
            Step::Lagged { missed } if missed > 0
        ));
    }

    #[test]
    fn resume_in_same_epoch_replays_what_is_held() {
        let t = topic(64 * 1024);
        publish_n(&t, 10);
        let mut d = Drain::new(
            t.clone(),
            StartAt::From {
                epoch: t.epoch(),
                next: 5,
            },
            LagPolicy::ResumeOldest,
        );
        assert_eq!(d.start_seq(), 5);
        let mut o = Observed::default();
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.seqs, (5..10).collect::<Vec<_>>());
        assert!(o.resyncs.is_empty());
    }

    #[test]
    fn resume_past_the_head_starts_at_the_head() {
        let t = topic(64 * 1024);
        publish_n(&t, 3);
        let d = Drain::new(
            t.clone(),
            StartAt::From {
                epoch: t.epoch(),
                next: 1001,
            },
            LagPolicy::ResumeOldest,
        );
        assert_eq!(d.start_seq(), 3);
    }

    #[test]
    fn resume_of_a_lost_range_says_not_retained() {
        let t = topic(4 * 1024);
        publish_n(&t, 200);
        let mut d = Drain::new(
            t.clone(),
            StartAt::From {
                epoch: t.epoch(),
                next: 10,
            },
            LagPolicy::ResumeOldest,
        );
        let mut o = Observed {
            next: Some(10),
            ..Default::default()
        };
        o.drain(&mut d, BatchLimits::default());
        let r = &o.resyncs[0];
        assert_eq!(r.reason, ResyncReason::NotRetained as i32);
        assert_eq!(r.missed, r.resume_seq - 10);
        assert_eq!(o.seqs.len() as u64 + o.missed, 190);
    }

    #[test]
    fn resume_in_another_epoch_says_epoch_changed() {
        let t = topic(4 * 1024);
        publish_n(&t, 200);
        let oldest = t.oldest_retained();
        assert!(oldest > 0);
        let mut d = Drain::new(
            t.clone(),
            StartAt::From {
                epoch: t.epoch() ^ 1,
                next: 12346,
            },
            LagPolicy::ResumeOldest,
        );
        assert_eq!(
            d.start_seq(),
            0,
            "accounting restarts at seq 0 of the new epoch"
        );
        let mut o = Observed::default();
        o.drain(&mut d, BatchLimits::default());
        let r = &o.resyncs[0];
        assert_eq!(r.reason, ResyncReason::EpochChanged as i32);
        assert_eq!(
            (r.missed, r.resume_seq, r.epoch),
            (oldest, oldest, t.epoch())
        );
        assert_eq!(o.seqs.first(), Some(&oldest));
        assert_eq!(o.seqs.len() as u64 + o.missed, 200);
    }

    #[test]
    fn epoch_change_is_reported_even_before_anything_is_published() {
        let t = topic(4 * 1024);
        let mut d = Drain::new(
            t.clone(),
            StartAt::From { epoch: 7, next: 8 },
            LagPolicy::ResumeOldest,
        );
        assert!(d.has_new());
        let mut o = Observed::default();
        assert_eq!(o.drain(&mut d, BatchLimits::default()), Step::Idle);
        assert_eq!(o.resyncs.len(), 1);
        assert_eq!((o.resyncs[0].missed, o.resyncs[0].resume_seq), (0, 0));
        publish_n(&t, 3);
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.seqs, vec![0, 1, 2]);
    }

    #[test]
    fn subscription_before_first_publish_starts_at_zero() {
        let t = topic(4 * 1024);
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        assert_eq!(d.start_seq(), 0);
        assert!(!d.has_new());
        assert_eq!(d.next_batch(BatchLimits::default(), |_| {}), Step::Idle);
        publish_n(&t, 2);
        assert!(d.has_new());
        let mut o = Observed::default();
        o.drain(&mut d, BatchLimits::default());
        assert_eq!(o.seqs, vec![0, 1]);
    }

    #[test]
    fn subscriber_gauge_follows_drains() {
        let t = topic(4 * 1024);
        let a = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        let b = Drain::new(t.clone(), StartAt::Oldest, LagPolicy::ResumeOldest);
        assert_eq!(t.stats().subscribers, 2);
        drop(a);
        drop(b);
        assert_eq!(t.stats().subscribers, 0);
    }

    #[test]
    fn deleted_topic_ends_the_drain() {
        let t = topic(4 * 1024);
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        t.mark_deleted();
        assert!(d.has_new());
        assert_eq!(
            d.next_batch(BatchLimits::default(), |_| {}),
            Step::TopicDeleted
        );
    }

    #[test]
    fn encoded_frames_match_prost_and_decode() {
        let t = topic(64 * 1024);
        t.publish(b"").unwrap(); // seq 0, empty payload: zero fields omitted
        publish_n(&t, 3);
        let mut d = Drain::new(t.clone(), StartAt::Oldest, LagPolicy::ResumeOldest);
        let mut manual = BytesMut::new();
        let mut via_prost = BytesMut::new();
        let mut times = Vec::new();
        d.next_batch(BatchLimits::default(), |e| {
            e.encode_frame(&mut manual);
            let owned = e.to_delivery();
            if let Some(v1::delivery::Kind::Message(m)) = &owned.kind {
                times.push(m.publish_time_unix_nanos);
            }
            lapwing_proto::encode_frame(&owned, &mut via_prost);
        });
        assert_eq!(manual, via_prost);
        let mut codec = FrameCodec::<v1::Delivery>::new(1 << 20);
        let mut seqs = Vec::new();
        while let Some(frame) = codec.decode(&mut manual).unwrap() {
            let Some(v1::delivery::Kind::Message(m)) = frame.kind else {
                panic!("not a message")
            };
            assert_eq!(m.epoch, t.epoch());
            assert!(m.publish_time_unix_nanos > 0);
            if m.seq > 0 {
                assert_eq!(m.payload, Bytes::from(format!("m{}", m.seq)));
            }
            seqs.push(m.seq);
        }
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        assert!(times.iter().all(|&t| t > 0));
    }

    /// Reads `d` until idle (bounded) into `sink`.
    fn deliver_all<D: Deliver>(d: &mut Drain, sink: &mut D, limits: BatchLimits) {
        for _ in 0..10_000 {
            if let Step::Idle = d.deliver(limits, sink) {
                return;
            }
        }
        panic!("never idle");
    }

    /// Decodes a stream of frames as a client would, checking that every
    /// message's payload starts with `m{seq}`, that seqs and resyncs add
    /// up from `next`, and that no partial frame is left: (seqs delivered,
    /// resyncs).
    fn decode_frames(mut frames: BytesMut, mut next: u64) -> (Vec<u64>, Vec<v1::Resync>) {
        let mut codec = FrameCodec::<v1::Delivery>::new(1 << 20);
        let (mut seqs, mut resyncs) = (Vec::new(), Vec::new());
        while let Some(frame) = codec.decode(&mut frames).unwrap() {
            match frame.kind.expect("a kind") {
                v1::delivery::Kind::Message(m) => {
                    assert_eq!(m.seq, next, "gap or repeat without a resync");
                    assert!(m.payload.starts_with(format!("m{}", m.seq).as_bytes()));
                    seqs.push(m.seq);
                    next = m.seq + 1;
                }
                v1::delivery::Kind::Resync(r) => {
                    assert_eq!(r.resume_seq, next + r.missed, "resync accounting");
                    next = r.resume_seq;
                    resyncs.push(r);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(frames.is_empty(), "no partial frame left");
        (seqs, resyncs)
    }

    /// Messages of 2 to 230 bytes, inline and in the arena, each starting
    /// with `m{seq}`.
    fn publish_sized(t: &Topic, n: u64) {
        publish_padded(t, n, |seq| 2 + (seq as usize * 37) % 224);
    }

    /// `n` messages `m{seq}` padded to `len(seq)` bytes.
    fn publish_padded(t: &Topic, n: u64, len: impl Fn(u64) -> usize) {
        for _ in 0..n {
            let seq = t.head();
            let mut payload = format!("m{seq}").into_bytes();
            payload.resize(len(seq).max(payload.len()), b'.');
            t.publish(&payload).unwrap();
        }
    }

    #[test]
    fn frames_copied_from_the_ring_are_the_frames_of_the_events() {
        // A ring of a few dozen messages, lapped between reads: messages
        // of every width, resyncs, batches cut short by their byte limit.
        let t = topic(4 * 1024);
        publish_sized(&t, 1);
        let limits = BatchLimits {
            max_messages: 16,
            max_bytes: 700,
        };
        let mut by_events = Drain::new(t.clone(), StartAt::Oldest, LagPolicy::ResumeOldest);
        let mut by_frames = Drain::new(t.clone(), StartAt::Oldest, LagPolicy::ResumeOldest);
        let mut expected = BytesMut::new();
        let mut sink = FrameSink::new();
        for round in 0..6 {
            publish_sized(&t, 10 + round * 25);
            deliver_all(
                &mut by_events,
                &mut Events(|d: DeliveryRef<'_>| d.encode_frame(&mut expected)),
                limits,
            );
            deliver_all(&mut by_frames, &mut sink, limits);
        }
        assert_eq!(sink.out, expected, "byte for byte");
        assert_eq!(by_frames.stats(), by_events.stats());
        let s = by_frames.stats();
        assert!(s.resyncs > 0, "the ring lapped the readers: {s:?}");
        assert_eq!(
            sink.framed as u64, s.delivered,
            "every message went as a frame"
        );
        let (seqs, resyncs) = decode_frames(sink.out, 0);
        let missed: u64 = resyncs.iter().map(|r| r.missed).sum();
        assert_eq!(seqs.len() as u64 + missed, t.head());
    }

    #[test]
    fn holes_become_the_same_resyncs_in_frames() {
        let (t, _) = backbone_topic(100, 64 * 1024, Vec::new());
        let mut by_events = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        let mut by_frames = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        feed_n(&t, 2);
        t.write_holes(3).unwrap();
        feed_n(&t, 1);
        t.write_holes(2).unwrap();
        let mut expected = BytesMut::new();
        deliver_all(
            &mut by_events,
            &mut Events(|d: DeliveryRef<'_>| d.encode_frame(&mut expected)),
            BatchLimits::default(),
        );
        let mut sink = FrameSink::new();
        deliver_all(&mut by_frames, &mut sink, BatchLimits::default());
        assert_eq!(sink.out, expected);
        let (seqs, resyncs) = decode_frames(sink.out, 100);
        assert_eq!(seqs, vec![100, 101, 105]);
        let gaps: Vec<(u64, u64)> = resyncs.iter().map(|r| (r.missed, r.resume_seq)).collect();
        assert_eq!(gaps, vec![(3, 105), (2, 108)]);
    }

    #[test]
    fn a_payload_overwritten_while_it_is_copied_into_a_frame_leaves_only_its_resync() {
        let t = topic(4 * 1024);
        publish_n(&t, 1);
        let mut d = Drain::new(t.clone(), StartAt::Latest, LagPolicy::ResumeOldest);
        // Arena messages only (an inline one outlives them, see the crate
        // docs of lapwing-ring): the publisher overwrites seq 1's chunks
        // after the drain has read its header, before the copy.
        publish_padded(&t, 1, |_| 200);
        let publisher = t.clone();
        let mut overwritten = false;
        let mut sink = FrameSink {
            out: BytesMut::new(),
            framed: 0,
            before_copy: move || {
                if !overwritten {
                    overwritten = true;
                    publish_padded(&publisher, 100, |_| 200);
                }
            },
        };
        deliver_all(&mut d, &mut sink, BatchLimits::default());
        assert_eq!(sink.framed as u64, d.stats().delivered);
        let (seqs, resyncs) = decode_frames(sink.out, 1);
        assert_eq!(resyncs.len(), 1, "{resyncs:?}");
        assert_eq!(resyncs[0].reason, ResyncReason::Lapped as i32);
        assert!(seqs[0] > 1, "seq 1 was not delivered torn: {seqs:?}");
        assert_eq!(seqs.len() as u64 + resyncs[0].missed, t.head() - 1);
    }
}
