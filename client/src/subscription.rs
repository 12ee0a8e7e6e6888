//! Subscriptions, all of their client-side state in one place: the
//! registry ([`Subscriptions`]) that the session driver (re)subscribes from
//! and the stream readers record progress in, the user's [`Subscription`]
//! stream, and the task that reads one server-opened subscription stream
//! into it.
//!
//! The resume position of a subscription (`epoch`, next `seq`) moves only
//! when a batch of events has entered the subscription's buffer, which
//! belongs to the user's handle and outlives any one connection. A batch
//! the reader could not hand over before its session ended is dropped
//! together with its position, so the next session asks for it again (or
//! gets an exact resync): a reconnect never opens a silent gap.
//!
//! A wildcard subscription (a pattern such as `prices.>`) keeps that
//! position per topic, learnt from each topic's `Joined` event and moved
//! by its events; a reconnect resumes every topic after its own position
//! (`Subscribe.resume`) and starts topics it has not heard of at their
//! oldest message, since they are new to it.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use lapwing_proto::pattern::Pattern;
use lapwing_proto::v1::{self, delivery, start_position, LagPolicy, ResyncReason};
use lapwing_proto::{encode_frame, FrameCodec};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::buffer::{self, BufferOverflow};
use crate::command::Cmd;
use crate::ClientError;

/// Most events moved from the stream to the subscription in one step.
const MAX_BATCH_EVENTS: usize = 256;

/// Events a reader hands to a subscription's buffer at once: at most the
/// buffer, at most [`MAX_BATCH_EVENTS`].
fn batch_events(buffer_events: usize) -> usize {
    buffer_events.clamp(1, MAX_BATCH_EVENTS)
}

/// One thing that happened on a subscription, in order.
///
/// Each event continues exactly where the previous one of its topic ended:
/// a message has the seq after the previous message, or the `resume_seq`
/// of the resync before it. So per topic, `delivered + sum(missed)` always
/// equals the number of seqs the subscription has passed
/// (`proto/PROTOCOL.md`, "Accounting invariant"). On a wildcard
/// subscription events of different topics interleave in no promised
/// order, and each topic's accounting starts at its [`Event::Joined`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A published message.
    Message {
        /// The message's topic.
        topic: Arc<str>,
        /// The topic's epoch: constant unless a resync with reason
        /// `EpochChanged` says otherwise.
        epoch: u64,
        /// The message's sequence number in `epoch`.
        seq: u64,
        /// The bytes as published.
        payload: Bytes,
        /// Server wall clock at publish, ns since the Unix epoch.
        publish_time_unix_nanos: u64,
    },
    /// `missed` messages were not delivered; the next message has seq
    /// `resume_seq` in `epoch`. `proto/PROTOCOL.md` ("Resync reasons") says
    /// when each reason occurs.
    Resync {
        /// The topic of the gap.
        topic: Arc<str>,
        /// How many messages were skipped (exact).
        missed: u64,
        /// The seq the subscription continues at.
        resume_seq: u64,
        /// Why: lapped by the ring, no longer retained, a new epoch, or
        /// skipped to the latest by the lag policy.
        reason: ResyncReason,
        /// The epoch `resume_seq` belongs to (new after `EpochChanged`;
        /// the count then restarts at seq 0 of it).
        epoch: u64,
    },
    /// Wildcard subscriptions only: from here on the subscription follows
    /// `topic` (it matched at the start, or was created later), starting
    /// at `start_seq` of `epoch`. Its events follow. After a reconnect each
    /// resumed topic is joined again, at the seq it continues from.
    Joined {
        /// The topic.
        topic: Arc<str>,
        /// Its epoch.
        epoch: u64,
        /// The first seq of it this subscription delivers or resyncs to.
        start_seq: u64,
    },
    /// Wildcard subscriptions only: the subscription no longer follows
    /// `topic`, which was deleted (by an operator, or reaped as idle); its
    /// messages not yet delivered went with it. If a topic of that name is
    /// created again, an [`Event::Joined`] with its new epoch follows.
    Left {
        /// The topic.
        topic: Arc<str>,
    },
}

impl Event {
    /// The topic this event belongs to.
    pub fn topic(&self) -> &str {
        match self {
            Event::Message { topic, .. }
            | Event::Resync { topic, .. }
            | Event::Joined { topic, .. }
            | Event::Left { topic } => topic,
        }
    }

    fn from_delivery(topic: &Arc<str>, kind: delivery::Kind) -> Event {
        match kind {
            delivery::Kind::Joined(j) => Event::Joined {
                topic: topic.clone(),
                epoch: j.epoch,
                start_seq: j.start_seq,
            },
            delivery::Kind::Left(_) => Event::Left {
                topic: topic.clone(),
            },
            delivery::Kind::Message(m) => Event::Message {
                topic: topic.clone(),
                epoch: m.epoch,
                seq: m.seq,
                payload: m.payload,
                publish_time_unix_nanos: m.publish_time_unix_nanos,
            },
            delivery::Kind::Resync(r) => Event::Resync {
                topic: topic.clone(),
                missed: r.missed,
                resume_seq: r.resume_seq,
                reason: r.reason(),
                epoch: r.epoch,
            },
        }
    }

    /// `(epoch, next seq expected)` after this event; `None` after `Left`
    /// (no position any more).
    fn next_position(&self) -> Option<(u64, u64)> {
        Some(match self {
            Event::Message { epoch, seq, .. } => (*epoch, seq.saturating_add(1)),
            Event::Resync {
                epoch, resume_seq, ..
            } => (*epoch, *resume_seq),
            Event::Joined {
                epoch, start_seq, ..
            } => (*epoch, *start_seq),
            Event::Left { .. } => return None,
        })
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// Only messages published from now on.
    #[default]
    Latest,
    /// Everything the topic's ring still holds.
    Oldest,
    /// Resume: messages after `seq` of `epoch`; a resync reports what can no
    /// longer be replayed (or, for another epoch, that the epoch changed).
    After {
        /// The epoch of the last message seen.
        epoch: u64,
        /// The last message seen; delivery starts after it.
        seq: u64,
    },
}

impl Start {
    fn to_proto(self) -> v1::StartPosition {
        let kind = match self {
            Start::Latest => start_position::Kind::Latest(start_position::Latest {}),
            Start::Oldest => start_position::Kind::Oldest(start_position::Oldest {}),
            Start::After { epoch, seq } => {
                start_position::Kind::After(start_position::After { epoch, seq })
            }
        };
        v1::StartPosition { kind: Some(kind) }
    }
}

/// How to subscribe. The default starts at the latest message and, when
/// lapped, resumes at the oldest message the ring still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Where the first session starts; after a reconnect the client resumes
    /// after the last event it delivered, whatever this says.
    pub start: Start,
    /// What the server does when the subscriber falls a whole ring behind:
    /// resume at the oldest retained message, skip to the latest (both with
    /// a resync), or end the subscription with `LAGGED`.
    pub lag_policy: LagPolicy,
}

/// Client-side state of one subscription, shared by the session driver
/// (which (re)subscribes) and the stream reader (which records progress).
#[derive(Debug)]
struct SubEntry {
    topic: Arc<str>,
    /// Per-topic positions `(epoch, next seq)` of a wildcard subscription;
    /// `None` for a subscription to one topic (which uses `epoch`/`next`).
    topics: Option<HashMap<Arc<str>, (u64, u64)>>,
    options: SubscribeOptions,
    tx: buffer::Sender,
    /// Last epoch seen (from SubscribeOk or a delivery in the buffer).
    epoch: Option<u64>,
    /// Next seq expected in `epoch`.
    next: Option<u64>,
    /// `(epoch, start_seq)` of the first SubscribeOk.
    first_ok: Arc<Mutex<Option<(u64, u64)>>>,
    pending_ok: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// Connection generation the Subscribe was last sent on.
    sent_generation: Option<u64>,
    /// Resumed from seq 0 of a known epoch, which `after` cannot express:
    /// subscribed at `oldest` instead, and the reader turns a gap at the start
    /// into the resync the server would have sent.
    from_zero: Option<u64>,
    terminal: Arc<Mutex<Option<ClientError>>>,
}

impl SubEntry {
    /// What to send in Subscribe: the resume point once anything is known,
    /// else the caller's start position. Returns `(start, from_zero_epoch)`.
    fn resume_start(&self) -> (Start, Option<u64>) {
        match (self.epoch, self.next) {
            (Some(epoch), Some(next)) if next > 0 => (
                Start::After {
                    epoch,
                    seq: next - 1,
                },
                None,
            ),
            (Some(epoch), Some(_)) => (Start::Oldest, Some(epoch)),
            _ => (self.options.start, None),
        }
    }

    /// A wildcard subscription's start and resume list: the caller's start
    /// until the server accepted it once; after that every topic it knows
    /// resumes after its position, and topics it never heard of are new to
    /// it and start at their oldest message.
    fn wildcard_start(&self) -> (Start, Vec<v1::TopicPosition>) {
        let positions = self.topics.as_ref().map_or_else(Vec::new, |topics| {
            topics
                .iter()
                .map(|(topic, &(epoch, next_seq))| v1::TopicPosition {
                    topic: topic.to_string(),
                    epoch,
                    next_seq,
                })
                .collect()
        });
        let start = if self.pending_ok.is_some() {
            self.options.start
        } else {
            Start::Oldest
        };
        (start, positions)
    }

    fn subscribe_frame(&mut self, id: u64, generation: u64) -> v1::ControlRequest {
        let (start, resume) = if self.topics.is_some() {
            self.wildcard_start()
        } else {
            let (start, from_zero) = self.resume_start();
            self.from_zero = from_zero;
            (start, Vec::new())
        };
        self.sent_generation = Some(generation);
        v1::ControlRequest {
            kind: Some(v1::control_request::Kind::Subscribe(v1::Subscribe {
                subscription_id: id,
                topic: self.topic.to_string(),
                start: Some(start.to_proto()),
                lag_policy: self.options.lag_policy as i32,
                resume,
            })),
        }
    }

    /// Ends the subscription with `err` (delivered after buffered events).
    fn fail(self, err: ClientError) {
        if let Some(ok) = self.pending_ok {
            let _ = ok.send(Err(err));
        } else {
            *lock(&self.terminal) = Some(err);
        }
    }
}

/// The workspace's lock policy (as in the server's `connections.rs`): a
/// poisoned lock is used anyway, because every critical section here is a
/// single insert, remove, read or field update that a panic cannot leave
/// half done, and one panicking task must not take every subscription down.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a stream reader takes from its subscription's entry.
struct ReaderView {
    tx: buffer::Sender,
    topic: Arc<str>,
    from_zero: Option<u64>,
    wildcard: bool,
}

/// Every live subscription of one client, by id.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    map: Mutex<HashMap<u64, SubEntry>>,
    next_id: AtomicU64,
    /// [`ClientConfig::subscription_buffer_events`](crate::ClientConfig::subscription_buffer_events).
    buffer_events: usize,
    /// [`ClientConfig::buffer_overflow`](crate::ClientConfig::buffer_overflow).
    overflow: BufferOverflow,
}

impl Subscriptions {
    pub(crate) fn new(buffer_events: usize, overflow: BufferOverflow) -> Self {
        Subscriptions {
            map: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            buffer_events,
            overflow,
        }
    }

    /// Registers a new subscription and returns the user's handle and the
    /// receiver of the server's verdict (the first SubscribeOk or Error).
    /// The caller then asks the driver to send Subscribe ([`Cmd::Subscribe`]
    /// with [`Subscription::id`]).
    pub(crate) fn register(
        self: &Arc<Self>,
        topic: &str,
        options: SubscribeOptions,
        cmd_tx: mpsc::UnboundedSender<Cmd>,
    ) -> (Subscription, oneshot::Receiver<Result<(), ClientError>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let topic: Arc<str> = topic.into();
        let wildcard = Pattern::parse(&topic).is_ok_and(|p| !p.is_literal());
        // A wildcard's buffer is shared by its topics, and lapping it would
        // take the oldest messages of whichever topic: a quiet topic's few
        // could go to make room for a hot one's flood. Pushing back leaves
        // the lapping to the server, which does it per topic.
        let overflow = if wildcard {
            BufferOverflow::PushBack
        } else {
            self.overflow
        };
        let (tx, rx) = buffer::channel(self.buffer_events, overflow);
        let (ok_tx, ok_rx) = oneshot::channel();
        let terminal = Arc::new(Mutex::new(None));
        let first_ok = Arc::new(Mutex::new(None));
        let (epoch, next) = match options.start {
            Start::After { epoch, seq } => (Some(epoch), Some(seq.saturating_add(1))),
            Start::Latest | Start::Oldest => (None, None),
        };
        lock(&self.map).insert(
            id,
            SubEntry {
                topic: topic.clone(),
                topics: wildcard.then(HashMap::new),
                options,
                tx,
                epoch,
                next,
                first_ok: first_ok.clone(),
                pending_ok: Some(ok_tx),
                sent_generation: None,
                from_zero: None,
                terminal: terminal.clone(),
            },
        );
        let subscription = Subscription {
            id,
            topic,
            rx,
            terminal,
            first_ok,
            registry: self.clone(),
            cmd_tx,
        };
        (subscription, ok_rx)
    }

    /// Appends a Subscribe frame to `buf` for every subscription not yet
    /// sent on connection `generation`, each from its resume position.
    pub(crate) fn encode_unsent(&self, generation: u64, buf: &mut BytesMut) {
        for (id, entry) in lock(&self.map).iter_mut() {
            if entry.sent_generation != Some(generation) {
                encode_frame(&entry.subscribe_frame(*id, generation), buf);
            }
        }
    }

    /// The Subscribe frame for `id`, unless it is gone or already sent on
    /// connection `generation`.
    pub(crate) fn subscribe_frame(&self, id: u64, generation: u64) -> Option<v1::ControlRequest> {
        lock(&self.map)
            .get_mut(&id)
            .filter(|e| e.sent_generation != Some(generation))
            .map(|e| e.subscribe_frame(id, generation))
    }

    /// The server refused to resume subscription `id` with an error that
    /// retrying can cure (its node is not ready for the topic, or its
    /// backbone is unreachable): keeps it, to be sent again. `false` when
    /// there is nothing to keep: a first subscribe, whose caller hears the
    /// error, or an unknown id.
    pub(crate) fn retry_later(&self, id: u64) -> bool {
        match lock(&self.map).get_mut(&id) {
            Some(entry) if entry.pending_ok.is_none() => {
                entry.sent_generation = None;
                true
            }
            _ => false,
        }
    }

    /// The server accepted a Subscribe: answer the caller (the first time)
    /// and learn the start position if none is known yet.
    pub(crate) fn accepted(&self, ok: &v1::SubscribeOk) {
        let mut map = lock(&self.map);
        if let Some(entry) = map.get_mut(&ok.subscription_id) {
            if let Some(tx) = entry.pending_ok.take() {
                *lock(&entry.first_ok) = Some((ok.epoch, ok.start_seq));
                let _ = tx.send(Ok(()));
            }
            if entry.epoch.is_none() {
                entry.epoch = Some(ok.epoch);
            }
            if entry.next.is_none() {
                entry.next = Some(ok.start_seq);
            }
        }
    }

    /// Ends subscription `id` with `err`, if it is still registered.
    pub(crate) fn fail(&self, id: u64, err: ClientError) {
        let entry = lock(&self.map).remove(&id);
        if let Some(entry) = entry {
            entry.fail(err);
        }
    }

    /// Ends every subscription, each with the error `err` makes.
    pub(crate) fn fail_all(&self, err: impl Fn() -> ClientError) {
        let entries: Vec<SubEntry> = lock(&self.map).drain().map(|(_, e)| e).collect();
        for entry in entries {
            entry.fail(err());
        }
    }

    /// The connection is gone: every subscription must be sent again.
    pub(crate) fn session_lost(&self) {
        for entry in lock(&self.map).values_mut() {
            entry.sent_generation = None;
        }
    }

    /// The position the next Subscribe for `id` would resume from (tests).
    #[cfg(test)]
    pub(crate) fn resume_start(&self, id: u64) -> Option<Start> {
        lock(&self.map).get(&id).map(|e| e.resume_start().0)
    }

    /// What the reader of subscription `id`'s stream needs, taking the
    /// from-zero marker of the Subscribe it answers.
    fn reader_view(&self, id: u64) -> Option<ReaderView> {
        lock(&self.map).get_mut(&id).map(|e| ReaderView {
            tx: e.tx.clone(),
            topic: e.topic.clone(),
            from_zero: e.from_zero.take(),
            wildcard: e.topics.is_some(),
        })
    }

    /// Records that the events up to `(epoch, next)` are in the buffer.
    fn advance(&self, id: u64, (epoch, next): (u64, u64)) {
        if let Some(entry) = lock(&self.map).get_mut(&id) {
            entry.epoch = Some(epoch);
            entry.next = Some(next);
        }
    }

    /// Records, per topic, that the events up to each position are in the
    /// buffer (a wildcard subscription); `None` forgets a topic that left.
    fn advance_topics(&self, id: u64, positions: HashMap<Arc<str>, Option<(u64, u64)>>) {
        if let Some(topics) = lock(&self.map).get_mut(&id).and_then(|e| e.topics.as_mut()) {
            for (topic, position) in positions {
                match position {
                    Some(p) => topics.insert(topic, p),
                    None => topics.remove(&topic),
                };
            }
        }
    }

    fn remove(&self, id: u64) -> bool {
        lock(&self.map).remove(&id).is_some()
    }
}

/// A live subscription: a [`Stream`] of [`Event`]s in order.
///
/// Events are buffered (a few thousand) ahead of the consumer; a consumer
/// slower than that makes the server lap it, which it learns as
/// [`Event::Resync`]. The stream ends with an error item when the
/// subscription is closed by the server (e.g. `LAGGED` under the
/// `disconnect` policy) or the client gives up, and then `None`. Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    topic: Arc<str>,
    rx: buffer::Receiver,
    terminal: Arc<Mutex<Option<ClientError>>>,
    first_ok: Arc<Mutex<Option<(u64, u64)>>>,
    registry: Arc<Subscriptions>,
    /// Unsubscribes on drop, and keeps the connection up meanwhile.
    cmd_tx: mpsc::UnboundedSender<Cmd>,
}

impl Subscription {
    /// The client-chosen subscription id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The topic subscribed to, or the pattern of a wildcard subscription
    /// (each event names its own topic: [`Event::topic`]).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// `(epoch, start_seq)` from the server's first SubscribeOk: the topic's
    /// epoch and the first seq this subscription delivers (or resyncs to).
    /// `(0, 0)` on a wildcard subscription, whose topics each start at
    /// their [`Event::Joined`].
    pub fn started_at(&self) -> Option<(u64, u64)> {
        *lock(&self.first_ok)
    }

    /// The next event; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Result<Event, ClientError>> {
        self.next().await
    }
}

impl Stream for Subscription {
    type Item = Result<Event, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(Some(Ok(event))),
            Poll::Ready(None) => {
                let err = lock(&self.terminal).take();
                Poll::Ready(err.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.registry.remove(self.id) {
            let _ = self.cmd_tx.send(Cmd::Unsubscribe(self.id));
        }
    }
}

/// A server-opened subscription stream, as its reader needs it: bytes in,
/// and a way to tell the server to stop sending.
pub(crate) trait SubscriptionStream: AsyncRead + Unpin + Send + 'static {
    /// Asks the server to stop sending (the subscription is gone).
    fn stop(&mut self);
}

/// Reads one server-opened subscription stream: the header names the
/// subscription, then every Delivery becomes an [`Event`]. Ends when the
/// stream does, or when `session_over` is cancelled while it waits for
/// room in the consumer's buffer (the batch it holds is then asked for
/// again by the next session, see the module docs).
pub(crate) async fn read_subscription_stream(
    subs: Arc<Subscriptions>,
    recv: impl SubscriptionStream,
    max_frame_bytes: usize,
    session_over: CancellationToken,
) {
    let batch_events = batch_events(subs.buffer_events);
    let mut framed = FramedRead::new(
        recv,
        FrameCodec::<v1::SubscriptionStreamHeader>::new(max_frame_bytes),
    );
    let header = match tokio::time::timeout(Duration::from_secs(10), framed.next()).await {
        Ok(Some(Ok(header))) => header,
        other => {
            tracing::warn!(?other, "subscription stream without a valid header");
            return;
        }
    };
    let id = header.subscription_id;
    let Some(ReaderView {
        tx,
        topic,
        mut from_zero,
        wildcard,
    }) = subs.reader_view(id)
    else {
        // Unsubscribed meanwhile (or a server bug): not ours to read.
        framed.into_inner().stop();
        return;
    };
    let mut framed = framed
        .map_decoder(|_| FrameCodec::<v1::Delivery>::new(max_frame_bytes))
        .ready_chunks(batch_events);
    // A wildcard subscription's topic names, one `Arc` each.
    let mut names = TopicNames::default();
    while let Some(chunk) = framed.next().await {
        let mut events = Vec::with_capacity(chunk.len() + 1);
        let mut failure = None;
        for delivery in chunk {
            match delivery {
                Ok(v1::Delivery { kind: Some(kind) }) => {
                    let event_topic = if wildcard {
                        names.get(event_topic_name(&kind))
                    } else {
                        topic.clone()
                    };
                    let mut event = Event::from_delivery(&event_topic, kind);
                    if let Some(epoch) = from_zero.take() {
                        let (gap, first) = rebase_from_zero(epoch, event);
                        events.extend(gap);
                        event = first;
                    }
                    events.push(event);
                }
                Ok(v1::Delivery { kind: None }) => {}
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(last) = events.last() {
            let position = last.next_position();
            let positions = wildcard.then(|| {
                events
                    .iter()
                    .map(|e| (names.get(e.topic()), e.next_position()))
                    .collect::<HashMap<_, _>>()
            });
            let sent = tokio::select! {
                sent = tx.send(events) => sent,
                () = session_over.cancelled() => return,
            };
            if sent.is_err() {
                // The subscription was dropped.
                framed.into_inner().into_inner().stop();
                return;
            }
            // No await between the send and this update: a reader aborted
            // at the session's end cannot leave one without the other.
            match (positions, position) {
                (Some(positions), _) => subs.advance_topics(id, positions),
                (None, Some(position)) => subs.advance(id, position),
                // A one-topic subscription gets no `Left`.
                (None, None) => {}
            }
        }
        if let Some(e) = failure {
            // A broken frame cannot be skipped; the connection's loss (if
            // that is what it was) triggers the resume.
            tracing::debug!(subscription = id, error = %e, "subscription stream ended");
            return;
        }
    }
}

/// The topic a wildcard subscription's event names.
fn event_topic_name(kind: &delivery::Kind) -> &str {
    match kind {
        delivery::Kind::Message(m) => &m.topic,
        delivery::Kind::Resync(r) => &r.topic,
        delivery::Kind::Joined(j) => &j.topic,
        delivery::Kind::Left(l) => &l.topic,
    }
}

/// Topic names seen on one wildcard subscription stream, so its events
/// share one `Arc<str>` per topic instead of allocating one per event.
#[derive(Default)]
struct TopicNames(HashSet<Arc<str>>);

impl TopicNames {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.get(name) {
            return known.clone();
        }
        let name: Arc<str> = name.into();
        self.0.insert(name.clone());
        name
    }
}

/// A subscription that resumed "after nothing" of `epoch` (subscribed at
/// `oldest`, since `after` cannot name seq -1): restates its first event so
/// the accounting runs from seq 0 of `epoch`, as `after{epoch, -1}` would.
/// Returns the resync to insert before the event, if any, and the event.
fn rebase_from_zero(epoch: u64, first: Event) -> (Option<Event>, Event) {
    match first {
        Event::Message {
            epoch: event_epoch,
            seq,
            ref topic,
            ..
        } => {
            if event_epoch == epoch && seq == 0 {
                return (None, first);
            }
            let gap = Event::Resync {
                topic: topic.clone(),
                missed: seq,
                resume_seq: seq,
                reason: if event_epoch == epoch {
                    ResyncReason::NotRetained
                } else {
                    ResyncReason::EpochChanged
                },
                epoch: event_epoch,
            };
            (Some(gap), first)
        }
        Event::Resync {
            topic,
            resume_seq,
            reason,
            epoch: event_epoch,
            ..
        } => (
            None,
            Event::Resync {
                topic,
                missed: resume_seq,
                resume_seq,
                reason: if event_epoch == epoch {
                    reason
                } else {
                    ResyncReason::EpochChanged
                },
                epoch: event_epoch,
            },
        ),
        // Only wildcard subscriptions join and leave, and they never
        // resume from zero.
        named @ (Event::Joined { .. } | Event::Left { .. }) => (None, named),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(epoch: u64, seq: u64) -> Event {
        Event::Message {
            topic: "t".into(),
            epoch,
            seq,
            payload: Bytes::new(),
            publish_time_unix_nanos: 0,
        }
    }

    #[test]
    fn a_poisoned_registry_keeps_working() {
        let subs = Arc::new(Subscriptions::new(16, BufferOverflow::LapOldest));
        let (cmd_tx, _cmd_rx) = mpsc::unbounded_channel();
        let (sub, _verdict) = subs.register("t", SubscribeOptions::default(), cmd_tx);
        let poisoner = subs.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.map.lock().unwrap();
            panic!("poison the registry");
        })
        .join();
        assert!(subs.map.is_poisoned());
        assert!(subs.subscribe_frame(sub.id(), 1).is_some());
        drop(sub);
        assert!(
            subs.subscribe_frame(1, 2).is_none(),
            "dropped: unregistered"
        );
    }

    #[test]
    fn a_wildcard_resumes_every_topic_it_knows_and_starts_the_others_at_oldest() {
        use v1::control_request::Kind;
        let subs = Arc::new(Subscriptions::new(16, BufferOverflow::LapOldest));
        let (cmd_tx, _cmd_rx) = mpsc::unbounded_channel();
        let (sub, _verdict) = subs.register("prices.>", SubscribeOptions::default(), cmd_tx);
        let frame = |generation| match subs.subscribe_frame(sub.id(), generation) {
            Some(v1::ControlRequest {
                kind: Some(Kind::Subscribe(s)),
            }) => s,
            other => panic!("{other:?}"),
        };
        let first = frame(1);
        assert_eq!(first.start, Some(Start::Latest.to_proto()));
        assert!(first.resume.is_empty());
        subs.accepted(&v1::SubscribeOk {
            subscription_id: sub.id(),
            ..Default::default()
        });
        // One topic learnt from its Joined (nothing read yet), one from a message.
        subs.advance_topics(
            sub.id(),
            HashMap::from([
                ("prices.eur".into(), Some((7, 0))),
                ("prices.usd".into(), Some((8, 4))),
                ("prices.chf".into(), Some((9, 1))),
            ]),
        );
        // prices.chf was deleted: its position goes.
        subs.advance_topics(sub.id(), HashMap::from([("prices.chf".into(), None)]));
        subs.session_lost();
        let mut again = frame(2);
        assert_eq!(again.start, Some(Start::Oldest.to_proto()));
        again.resume.sort_by(|a, b| a.topic.cmp(&b.topic));
        let resume: Vec<_> = again
            .resume
            .iter()
            .map(|p| (p.topic.as_str(), p.epoch, p.next_seq))
            .collect();
        assert_eq!(resume, [("prices.eur", 7, 0), ("prices.usd", 8, 4)]);
    }

    #[test]
    fn resume_from_zero_reports_the_gap_it_finds() {
        assert_eq!(rebase_from_zero(7, msg(7, 0)), (None, msg(7, 0)));
        assert_eq!(
            rebase_from_zero(7, msg(7, 5)).0,
            Some(Event::Resync {
                topic: "t".into(),
                missed: 5,
                resume_seq: 5,
                reason: ResyncReason::NotRetained,
                epoch: 7
            })
        );
        assert!(matches!(
            rebase_from_zero(7, msg(8, 0)).0,
            Some(Event::Resync {
                reason: ResyncReason::EpochChanged,
                missed: 0,
                ..
            })
        ));
    }
}
