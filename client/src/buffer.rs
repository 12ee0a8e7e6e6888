//! A subscription's event buffer: what the stream readers have received and
//! the consumer has not taken yet, at most
//! [`ClientConfig::subscription_buffer_events`] of it.
//!
//! When a consumer is slower than its topic the buffer fills, and what
//! happens then is [`BufferOverflow`]:
//!
//! - **`LapOldest`** (the default) treats the buffer as the last ring of
//!   the pipeline. A full buffer first pushes back for [`LAP_AFTER`]
//!   (500 ms), so a consumer that only stalls (a burst, a busy machine)
//!   loses nothing while the stream window and the server's ring hold the
//!   rest; then new events lap the oldest *messages* still waiting, and the
//!   consumer's next event is a `Resync` that counts exactly what was
//!   lapped. A consumer slower than its topic thus hears of its lag about
//!   half a second after its buffer filled, at its next read, and what it
//!   reads then is at most a buffer behind the head instead of minutes
//!   behind it.
//! - **`PushBack`** stops reading the stream until the consumer makes room:
//!   QUIC flow control then holds the server back, the server's ring laps
//!   the subscription, and its resync arrives after the buffered backlog.
//!   It saves the bandwidth of messages the consumer would not read.
//!
//! A wildcard subscription always pushes back (one buffer serves all its
//! topics, and lapping the oldest would let a hot topic take a quiet one's
//! messages; the server laps each topic on its own).
//!
//! Lapping keeps the accounting exact (`proto/PROTOCOL.md`, "Accounting
//! invariant"). The lapped events are always the oldest in the buffer, so
//! they are folded into resyncs kept at the buffer's front, one per topic:
//! a message `seq` adds 1 to its topic's missed count and moves
//! `resume_seq` to `seq + 1`, a resync adds its own count and takes its
//! `resume_seq`. Every event of a topic behind its folded resync therefore
//! continues where the resync ends. `Joined`, `Left` and `EpochChanged`
//! events are never lapped: lapping stops at one until the consumer has
//! taken it (the buffer may then hold one reader batch more than its
//! size, and readers wait, as under `PushBack`).
//!
//! [`ClientConfig::subscription_buffer_events`]: crate::ClientConfig::subscription_buffer_events

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lapwing_proto::v1::ResyncReason;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Event;

/// What a subscription to one topic does when its consumer lets the buffer
/// fill. A wildcard subscription always pushes back: its buffer is shared
/// by its topics, and lapping it could take a quiet topic's messages to
/// make room for a hot one's, where the server laps each topic on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BufferOverflow {
    /// New events lap the oldest waiting messages, which the consumer's
    /// next event, a `Resync` with reason `Lapped`, counts exactly; after
    /// pushing back for half a second first, so a short stall loses
    /// nothing. The consumer hears of its lag at its next read after that.
    #[default]
    LapOldest,
    /// Stop reading the stream until the consumer makes room; the server's
    /// ring laps the subscription instead, and its resync arrives after
    /// the buffered backlog. Saves the bandwidth of the skipped messages.
    PushBack,
}

/// The consumer is gone (the [`Receiver`] was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

#[derive(Debug)]
struct State {
    events: VecDeque<Event>,
    /// The first `folded` events are resyncs made by lapping, one per topic.
    folded: usize,
    /// Since when a batch has not fitted (cleared when one fits).
    full_since: Option<Instant>,
    senders: usize,
    receiver_gone: bool,
    receiver: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes readers waiting for room.
    room: Notify,
    capacity: usize,
    overflow: BufferOverflow,
    /// How long a full buffer waits for room before it laps.
    lap_after: Duration,
}

/// How long a full `LapOldest` buffer pushes back before it laps: a
/// consumer that stalls for less (a burst, a busy machine) loses nothing,
/// since the stream window and the server's ring hold the rest meanwhile;
/// one slower than its topic hears of its lag this long after its buffer
/// filled, plus one read. (Lapping at once cost the bench's sustainable
/// rate a bisection step, 192 k instead of 224 k msgs/s at N = 10, 64 B,
/// in 2 runs of 2; with this delay it was 224 k in 3 runs of 4.)
pub(crate) const LAP_AFTER: Duration = Duration::from_millis(500);

/// Room for events an emptied buffer keeps; a burst grows it up to its
/// capacity, and it gives the rest back once the consumer has caught up
/// (4 096 events are about 320 KiB, per subscription).
const KEPT_CAPACITY: usize = 256;

/// A new buffer of `capacity` events (at least 1).
pub(crate) fn channel(capacity: usize, overflow: BufferOverflow) -> (Sender, Receiver) {
    channel_lapping_after(capacity, overflow, LAP_AFTER)
}

/// [`channel`] with another [`LAP_AFTER`] (tests lap at once).
fn channel_lapping_after(
    capacity: usize,
    overflow: BufferOverflow,
    lap_after: Duration,
) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            events: VecDeque::new(),
            folded: 0,
            full_since: None,
            senders: 1,
            receiver_gone: false,
            receiver: None,
        }),
        room: Notify::new(),
        capacity: capacity.max(1),
        overflow,
        lap_after,
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The workspace's lock policy: a poisoned lock is used anyway (every
/// critical section leaves the state whole).
fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The stream readers' end (and the registry's, which keeps the buffer
/// open while the subscription lives).
#[derive(Debug)]
pub(crate) struct Sender {
    shared: Arc<Shared>,
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        lock(&self.shared).senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        st.senders -= 1;
        if st.senders == 0 {
            if let Some(w) = st.receiver.take() {
                w.wake();
            }
        }
    }
}

impl Sender {
    /// Hands `batch` to the consumer, whole or not at all. When it does not
    /// fit, waits for room: under `PushBack` for as long as it takes, under
    /// `LapOldest` until the buffer has been full for [`LAP_AFTER`], then
    /// laps (and keeps lapping at once until a batch fits again; while an
    /// event that cannot be lapped is next, it takes at most one batch over
    /// and waits). Cancel-safe: nothing is taken before it returns.
    pub(crate) async fn send(&self, batch: Vec<Event>) -> Result<(), Gone> {
        let lapping = self.shared.overflow == BufferOverflow::LapOldest;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Until when to wait for room before lapping; `None`: for room.
            let mut until = None;
            {
                let mut st = lock(&self.shared);
                if st.receiver_gone {
                    return Err(Gone);
                }
                let cap = self.shared.capacity;
                let mut fits = st.events.len() + batch.len() <= cap || st.events.is_empty();
                let mut lapped = false;
                if fits {
                    st.full_since = None;
                } else if lapping {
                    // Once the buffer has been full for LAP_AFTER it laps at
                    // once, until a batch fits again.
                    let at =
                        *st.full_since.get_or_insert_with(Instant::now) + self.shared.lap_after;
                    if Instant::now() >= at {
                        st.lap_to(cap);
                        fits = st.events.len() <= cap;
                        lapped = true;
                    } else {
                        until = Some(at);
                    }
                }
                if fits {
                    st.events.extend(batch);
                    if lapped {
                        st.lap_to(cap);
                    }
                    if let Some(w) = st.receiver.take() {
                        w.wake();
                    }
                    return Ok(());
                }
            }
            match until {
                Some(at) => {
                    tokio::select! {
                        () = room => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => room.await,
            }
        }
    }
}

/// The consumer's end.
#[derive(Debug)]
pub(crate) struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next event; `None` once the buffer is empty and every sender is
    /// gone.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut st = lock(&self.shared);
        if let Some(event) = st.events.pop_front() {
            st.folded = st.folded.saturating_sub(1);
            if st.events.is_empty() && st.events.capacity() > KEPT_CAPACITY {
                // A burst grew it; an idle subscription keeps little.
                st.events.shrink_to(KEPT_CAPACITY);
            }
            drop(st);
            self.shared.room.notify_waiters();
            return Poll::Ready(Some(event));
        }
        if st.senders == 0 {
            return Poll::Ready(None);
        }
        st.receiver = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        st.receiver_gone = true;
        st.events.clear();
        st.folded = 0;
        drop(st);
        self.shared.room.notify_waiters();
    }
}

impl State {
    /// Laps the oldest events until at most `cap` are left, or an event
    /// that cannot be lapped is next.
    fn lap_to(&mut self, cap: usize) {
        while self.events.len() > cap && self.lap_one() {}
    }

    /// Folds the oldest event after the folded resyncs into its topic's
    /// folded resync (the buffer shrinks by one), or turns it into one (the
    /// first lap of its topic, no shrinking). `false` when that event
    /// cannot be lapped.
    fn lap_one(&mut self) -> bool {
        let i = self.folded;
        let Some(event) = self.events.get(i) else {
            return false;
        };
        let Some((epoch, missed, resume_seq)) = lappable(event) else {
            return false;
        };
        let topic = event.topic();
        let existing = self.events.range(..i).position(|f| f.topic() == topic);
        match existing {
            Some(j) => {
                let Some(Event::Resync {
                    epoch: folded_epoch,
                    missed: folded_missed,
                    resume_seq: folded_resume,
                    ..
                }) = self.events.get_mut(j)
                else {
                    unreachable!("the folded prefix holds resyncs only");
                };
                if *folded_epoch != epoch {
                    return false;
                }
                *folded_missed += missed;
                *folded_resume = resume_seq;
                self.events.remove(i);
            }
            None => {
                let folded = match self.events.remove(i) {
                    // A resync already says what it skipped.
                    Some(resync @ Event::Resync { .. }) => resync,
                    Some(Event::Message { topic, epoch, .. }) => Event::Resync {
                        topic,
                        missed,
                        resume_seq,
                        reason: ResyncReason::Lapped,
                        epoch,
                    },
                    _ => unreachable!("lappable() admits messages and resyncs only"),
                };
                self.events.insert(i, folded);
                self.folded += 1;
            }
        }
        true
    }
}

/// `(epoch, missed, resume_seq)` of an event that lapping may fold: a
/// message counts 1 and resumes after itself; a resync within its epoch
/// counts and resumes as it says.
fn lappable(event: &Event) -> Option<(u64, u64, u64)> {
    match event {
        Event::Message { epoch, seq, .. } => Some((*epoch, 1, seq.saturating_add(1))),
        Event::Resync {
            epoch,
            missed,
            resume_seq,
            reason,
            ..
        } if *reason != ResyncReason::EpochChanged => Some((*epoch, *missed, *resume_seq)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use bytes::Bytes;
    use futures::task::noop_waker_ref;
    use proptest::prelude::*;

    fn msg(topic: &str, epoch: u64, seq: u64) -> Event {
        Event::Message {
            topic: topic.into(),
            epoch,
            seq,
            payload: Bytes::new(),
            publish_time_unix_nanos: 0,
        }
    }

    fn resync(
        topic: &str,
        epoch: u64,
        missed: u64,
        resume_seq: u64,
        reason: ResyncReason,
    ) -> Event {
        Event::Resync {
            topic: topic.into(),
            missed,
            resume_seq,
            reason,
            epoch,
        }
    }

    /// A lapping buffer that laps as soon as it is full.
    fn lapping_now(capacity: usize) -> (Sender, Receiver) {
        channel_lapping_after(capacity, BufferOverflow::LapOldest, Duration::ZERO)
    }

    fn try_recv(rx: &mut Receiver) -> Option<Event> {
        match rx.poll_recv(&mut Context::from_waker(noop_waker_ref())) {
            Poll::Ready(e) => e,
            Poll::Pending => None,
        }
    }

    /// Sends without waiting; `false` if the send would have waited.
    fn send_now(tx: &Sender, batch: Vec<Event>) -> bool {
        let fut = tx.send(batch);
        futures::pin_mut!(fut);
        matches!(
            fut.poll(&mut Context::from_waker(noop_waker_ref())),
            Poll::Ready(Ok(()))
        )
    }

    use std::future::Future;

    #[test]
    fn a_full_buffer_laps_its_oldest_messages_into_one_resync() {
        let (tx, mut rx) = lapping_now(4);
        for seq in 0..10 {
            assert!(send_now(&tx, vec![msg("t", 7, seq)]));
        }
        // Seqs 0..=6 lapped: the consumer reads the gap first, then the
        // newest it can still have.
        assert_eq!(
            try_recv(&mut rx),
            Some(resync("t", 7, 7, 7, ResyncReason::Lapped))
        );
        for seq in 7..10 {
            assert_eq!(try_recv(&mut rx), Some(msg("t", 7, seq)));
        }
        assert_eq!(try_recv(&mut rx), None);
    }

    /// A full buffer first pushes back, so a short stall loses nothing;
    /// only after LAP_AFTER does it lap.
    #[tokio::test(start_paused = true)]
    async fn a_full_buffer_waits_lap_after_before_it_laps() {
        let (tx, mut rx) = channel(2, BufferOverflow::LapOldest);
        assert!(send_now(&tx, vec![msg("t", 1, 0), msg("t", 1, 1)]));
        let send = tokio::spawn(async move { tx.send(vec![msg("t", 1, 2)]).await });
        tokio::time::sleep(LAP_AFTER / 2).await;
        assert!(!send.is_finished(), "lapped before LAP_AFTER");
        tokio::time::sleep(LAP_AFTER).await;
        assert!(send.is_finished(), "still waiting after LAP_AFTER");
        assert_eq!(send.await.unwrap(), Ok(()));
        // The folded resync takes a slot too: seqs 0 and 1 go.
        assert_eq!(
            try_recv(&mut rx),
            Some(resync("t", 1, 2, 2, ResyncReason::Lapped))
        );
        assert_eq!(try_recv(&mut rx), Some(msg("t", 1, 2)));

        // Still full (nobody read): the next batch laps at once.
        let (tx, mut rx) = channel(2, BufferOverflow::LapOldest);
        assert!(send_now(&tx, vec![msg("t", 1, 0), msg("t", 1, 1)]));
        let tx = tokio::spawn(async move {
            tx.send(vec![msg("t", 1, 2)]).await.unwrap();
            tx
        })
        .await
        .unwrap();
        assert!(send_now(&tx, vec![msg("t", 1, 3)]), "no second wait");
        assert_eq!(
            try_recv(&mut rx),
            Some(resync("t", 1, 3, 3, ResyncReason::Lapped))
        );
        assert_eq!(try_recv(&mut rx), Some(msg("t", 1, 3)));

        // A consumer that makes room in time loses nothing.
        let (tx, mut rx) = channel(2, BufferOverflow::LapOldest);
        assert!(send_now(&tx, vec![msg("t", 1, 0), msg("t", 1, 1)]));
        let send = tokio::spawn(async move { tx.send(vec![msg("t", 1, 2)]).await });
        tokio::time::sleep(LAP_AFTER / 2).await;
        assert_eq!(try_recv(&mut rx), Some(msg("t", 1, 0)));
        assert_eq!(send.await.unwrap(), Ok(()));
        assert_eq!(try_recv(&mut rx), Some(msg("t", 1, 1)));
        assert_eq!(try_recv(&mut rx), Some(msg("t", 1, 2)));
    }

    #[test]
    fn an_emptied_buffer_gives_back_what_a_burst_took() {
        let (tx, mut rx) = channel(4096, BufferOverflow::PushBack);
        assert!(send_now(&tx, (0..4000).map(|s| msg("t", 1, s)).collect()));
        assert!(lock(&tx.shared).events.capacity() >= 4000);
        while try_recv(&mut rx).is_some() {}
        assert!(lock(&tx.shared).events.capacity() <= KEPT_CAPACITY);
    }

    #[test]
    fn push_back_waits_for_room_and_loses_nothing() {
        let (tx, mut rx) = channel(4, BufferOverflow::PushBack);
        assert!(send_now(&tx, (0..3).map(|s| msg("t", 1, s)).collect()));
        assert!(
            !send_now(&tx, (3..5).map(|s| msg("t", 1, s)).collect()),
            "no room for 2 more"
        );
        assert_eq!(try_recv(&mut rx), Some(msg("t", 1, 0)));
        assert!(send_now(&tx, (3..5).map(|s| msg("t", 1, s)).collect()));
        for seq in 1..5 {
            assert_eq!(try_recv(&mut rx), Some(msg("t", 1, seq)));
        }
    }

    #[test]
    fn an_epoch_change_is_never_lapped_and_holds_lapping_back() {
        let (tx, mut rx) = lapping_now(2);
        let changed = resync("t", 2, 0, 0, ResyncReason::EpochChanged);
        assert!(send_now(&tx, vec![changed.clone()]));
        assert!(send_now(&tx, vec![msg("t", 2, 0)]));
        // Full, and the oldest cannot be lapped: one batch more is taken,
        // then the reader waits.
        assert!(send_now(&tx, vec![msg("t", 2, 1)]));
        assert!(!send_now(&tx, vec![msg("t", 2, 2)]));
        assert_eq!(try_recv(&mut rx), Some(changed));
        // Now seqs 0 and 1 can be lapped to make room.
        assert!(send_now(&tx, vec![msg("t", 2, 2)]));
        assert_eq!(
            try_recv(&mut rx),
            Some(resync("t", 2, 2, 2, ResyncReason::Lapped))
        );
        assert_eq!(try_recv(&mut rx), Some(msg("t", 2, 2)));
    }

    #[test]
    fn the_consumer_ends_after_the_last_sender_and_senders_see_it_gone() {
        let (tx, mut rx) = lapping_now(4);
        let tx2 = tx.clone();
        assert!(send_now(&tx, vec![msg("t", 1, 0)]));
        drop(tx);
        assert_eq!(try_recv(&mut rx), Some(msg("t", 1, 0)));
        assert!(matches!(
            rx.poll_recv(&mut Context::from_waker(noop_waker_ref())),
            Poll::Pending
        ));
        drop(tx2);
        assert!(matches!(
            rx.poll_recv(&mut Context::from_waker(noop_waker_ref())),
            Poll::Ready(None)
        ));
        let (tx, rx) = lapping_now(4);
        drop(rx);
        let fut = tx.send(vec![msg("t", 1, 0)]);
        futures::pin_mut!(fut);
        assert_eq!(
            fut.poll(&mut Context::from_waker(noop_waker_ref())),
            Poll::Ready(Err(Gone))
        );
    }

    /// One topic's accounting as a consumer checks it: every event
    /// continues where the one before ended.
    #[derive(Debug, Default)]
    struct Ledger {
        next: Option<(u64, u64)>,
        delivered: u64,
        missed: u64,
    }

    impl Ledger {
        fn record(&mut self, e: &Event) -> Result<(), String> {
            let at = |epoch, seq| match self.next {
                Some((e0, n)) if (e0, n) != (epoch, seq) => {
                    Err(format!("expected {e0}/{n}, got {epoch}/{seq}: {e:?}"))
                }
                _ => Ok(()),
            };
            match e {
                Event::Message { epoch, seq, .. } => {
                    at(*epoch, *seq)?;
                    self.delivered += 1;
                    self.next = Some((*epoch, seq + 1));
                }
                Event::Resync {
                    epoch,
                    missed,
                    resume_seq,
                    reason,
                    ..
                } => {
                    if *reason == ResyncReason::EpochChanged {
                        self.next = Some((*epoch, *resume_seq));
                        self.missed += missed;
                        return Ok(());
                    }
                    at(*epoch, resume_seq - missed)?;
                    self.missed += missed;
                    self.next = Some((*epoch, *resume_seq));
                }
                Event::Joined {
                    epoch, start_seq, ..
                } => self.next = Some((*epoch, *start_seq)),
                Event::Left { .. } => {}
            }
            Ok(())
        }
    }

    /// A stream of events for a few topics, as a server sends them: per
    /// topic, messages at consecutive seqs, now and then a server resync,
    /// rarely an epoch change.
    fn script() -> impl Strategy<Value = Vec<(usize, u8)>> {
        prop::collection::vec((0usize..3, 0u8..40), 1..300)
    }

    proptest! {
        /// Whatever the capacity, batching and the consumer's pace, the
        /// consumer's per-topic ledger holds: each event continues where the
        /// previous one ended, and delivered + missed covers every seq sent.
        #[test]
        fn lapping_keeps_every_topic_exact(
            script in script(),
            capacity in 1usize..12,
            batch in 1usize..6,
            reads_per_batch in 0usize..4,
        ) {
            let (tx, mut rx) = lapping_now(capacity);
            let topics = ["a", "b", "c"];
            let mut next: HashMap<&str, (u64, u64)> = HashMap::new();
            let mut sent: HashMap<&str, u64> = HashMap::new();
            let mut ledgers: HashMap<String, Ledger> = HashMap::new();
            let mut pending = Vec::new();
            let consume = |rx: &mut Receiver, n: usize, ledgers: &mut HashMap<String, Ledger>| -> Result<(), String> {
                for _ in 0..n {
                    match try_recv(rx) {
                        Some(e) => ledgers.entry(e.topic().to_owned()).or_default().record(&e)?,
                        None => break,
                    }
                }
                Ok(())
            };
            for (t, roll) in script {
                let topic = topics[t];
                let (epoch, seq) = *next.entry(topic).or_insert((1, 0));
                let event = match roll {
                    0 => {
                        next.insert(topic, (epoch + 1, 0));
                        resync(topic, epoch + 1, 0, 0, ResyncReason::EpochChanged)
                    }
                    1..=3 => {
                        let gap = u64::from(roll);
                        next.insert(topic, (epoch, seq + gap));
                        *sent.entry(topic).or_default() += gap;
                        resync(topic, epoch, gap, seq + gap, ResyncReason::Lapped)
                    }
                    _ => {
                        next.insert(topic, (epoch, seq + 1));
                        *sent.entry(topic).or_default() += 1;
                        msg(topic, epoch, seq)
                    }
                };
                pending.push(event);
                if pending.len() == batch {
                    let events = std::mem::take(&mut pending);
                    // A reader that would wait gets room from the consumer.
                    let mut tries = 0;
                    while !send_now(&tx, events.clone()) {
                        consume(&mut rx, 1, &mut ledgers).map_err(TestCaseError::fail)?;
                        tries += 1;
                        prop_assert!(tries < 1000, "the reader never got room");
                    }
                    let len = lock(&tx.shared).events.len();
                    prop_assert!(len <= capacity + batch, "{len} events held");
                    consume(&mut rx, reads_per_batch, &mut ledgers).map_err(TestCaseError::fail)?;
                }
            }
            while !send_now(&tx, pending.clone()) {
                consume(&mut rx, 1, &mut ledgers).map_err(TestCaseError::fail)?;
            }
            consume(&mut rx, usize::MAX, &mut ledgers).map_err(TestCaseError::fail)?;
            for topic in topics {
                let Some(l) = ledgers.get(topic) else { continue };
                let sent = sent.get(topic).copied().unwrap_or(0);
                prop_assert_eq!(l.delivered + l.missed, sent, "topic {}", topic);
            }
        }
    }
}
