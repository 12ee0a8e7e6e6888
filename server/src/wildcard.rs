//! A wildcard subscription: one [`Drain`] per topic its pattern matches,
//! the topics that exist when it starts and the ones created later, read
//! in turn into one stream of events.
//!
//! The delivery contract holds per topic, because each topic has its own
//! drain: every event names its topic, a lap on one topic is a Resync for
//! that topic with exact counts, and no other topic's accounting moves.
//! Events are in order within a topic; across topics there is no order.
//!
//! **Joining.** Before a topic's first event the subscription emits
//! `Joined{topic, epoch, start_seq}`, so a client knows where the topic's
//! accounting starts even before anything is published to it (which is
//! what it resumes from after a reconnect). A topic that matched at the
//! start begins at the subscription's `start` (latest or oldest); one
//! created later begins at its seq 0; one named in the resume list begins
//! at its own `{epoch, next}` (a Resync first if that is gone, or if the
//! epoch is not the topic's).
//!
//! **New topics.** The registry broadcasts the name of every topic it
//! creates ([`Registry::watch_created`]). The subscription listens before
//! it scans the registry, so a topic created during the scan is seen by
//! one or both and joined once. A listener that falls behind the
//! broadcast rescans instead. A deleted (or reaped) topic leaves with a
//! `Left{topic}` event, so the client drops its resume position; if it is
//! created again, it joins again with its new epoch.
//!
//! **Bounds.** At most `limit` topics: a pattern matching more is refused,
//! and a new topic that would exceed it ends the subscription with
//! [`Step::TooManyTopics`]: dropping the topic would lose its messages
//! without a word. **Fairness**: one call reads at most a quantum of each
//! topic (the batch limits divided among the topics, at least
//! [`MIN_QUANTUM_MESSAGES`] messages), starting one topic further on each
//! call, so one hot topic cannot starve the others: it gets its quantum
//! per round like everyone else, and its own ring laps it if it cannot
//! keep up.

use std::collections::HashMap;
use std::future::pending;
use std::sync::Arc;

use lapwing_proto::pattern::Pattern;
use lapwing_proto::v1::LagPolicy;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::drain::{
    BatchLimits, Deliver, DeliveryRef, Drain, DrainStats, Events, Framed, StartAt, Step,
};
use crate::error::{Exhausted, RequestError};
use crate::registry::Registry;
use crate::topic::Topic;

/// The fewest messages one topic may read per call when there are many
/// topics (the batch limits divided by the topic count would be less).
pub const MIN_QUANTUM_MESSAGES: usize = 16;

/// The fewest payload bytes one topic may read per call.
const MIN_QUANTUM_BYTES: usize = 16 * 1024;

/// One topic's resume position: deliver from `next` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPosition {
    /// The topic.
    pub topic: String,
    /// The epoch the client saw last.
    pub epoch: u64,
    /// The seq after the last event the client has.
    pub next: u64,
}

#[derive(Debug)]
struct Member {
    drain: Drain,
    /// `Joined` is still to be emitted.
    announce: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct Wildcard {
    pattern: Pattern,
    registry: Arc<Registry>,
    created: broadcast::Receiver<Arc<str>>,
    policy: LagPolicy,
    limit: u32,
    members: Vec<Member>,
    /// Names from the creation feed, not looked at yet.
    arrivals: Vec<Arc<str>>,
    /// The feed lagged: compare with the registry on the next call.
    rescan: bool,
    /// Resume positions of topics that do not exist (yet).
    resume: HashMap<String, (u64, u64)>,
    /// The member the next call starts at.
    cursor: usize,
    /// Accounting of members that left (deleted topics).
    departed: DrainStats,
    ended: Option<Step>,
}

impl Drop for Wildcard {
    fn drop(&mut self) {
        self.registry.lose_interest(&self.pattern);
    }
}

impl Wildcard {
    /// A subscription to every topic `pattern` matches: the ones that
    /// exist start at `start` (latest or oldest) unless `resume` names
    /// them; later ones at their first message.
    pub fn new(
        pattern: Pattern,
        registry: Arc<Registry>,
        start: StartAt,
        resume: Vec<TopicPosition>,
        policy: LagPolicy,
        limit: u32,
    ) -> Result<Wildcard, RequestError> {
        if matches!(start, StartAt::From { .. }) {
            return Err(RequestError::InvalidArgument(format!(
                "a wildcard subscription to `{}` starts at latest or oldest; it resumes per topic (Subscribe.resume)",
                pattern.as_str()
            )));
        }
        if resume.len() > limit as usize {
            return Err(Exhausted::WildcardTopics { limit }.into());
        }
        let mut positions = HashMap::with_capacity(resume.len());
        for p in resume {
            if !pattern.matches(&p.topic) {
                return Err(RequestError::InvalidArgument(format!(
                    "resume position for `{}`, which `{}` does not match",
                    p.topic,
                    pattern.as_str()
                )));
            }
            positions.insert(p.topic, (p.epoch, p.next));
        }
        // Listen first, then scan: a topic created in between is in both
        // (and joined once), never in neither.
        let created = registry.watch_created();
        let existing = registry.matching(&pattern);
        if existing.len() > limit as usize {
            return Err(Exhausted::WildcardTopics { limit }.into());
        }
        registry.add_interest(&pattern);
        let mut sub = Wildcard {
            pattern,
            registry,
            created,
            policy,
            limit,
            members: Vec::with_capacity(existing.len()),
            arrivals: Vec::new(),
            rescan: false,
            resume: positions,
            cursor: 0,
            departed: DrainStats::default(),
            ended: None,
        };
        for topic in existing {
            let start = sub.take_resume(&topic).unwrap_or(start);
            sub.join(topic, start);
        }
        Ok(sub)
    }

    /// The pattern.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// How many topics it follows now.
    pub fn topics(&self) -> usize {
        self.members.len()
    }

    /// Accounting so far, all topics together.
    pub fn stats(&self) -> DrainStats {
        self.members
            .iter()
            .map(|m| m.drain.stats())
            .fold(self.departed, |a, s| DrainStats {
                delivered: a.delivered + s.delivered,
                missed: a.missed + s.missed,
                resyncs: a.resyncs + s.resyncs,
            })
    }

    /// Messages published to its topics and not yet read, as of now.
    pub fn lag(&self) -> u64 {
        self.members
            .iter()
            .map(|m| m.drain.lag())
            .fold(0, u64::saturating_add)
    }

    /// Whether [`Wildcard::next_batch`] has something to do.
    pub fn has_new(&self) -> bool {
        self.ended.is_some()
            || self.rescan
            || !self.arrivals.is_empty()
            || !self.created.is_empty()
            || self.members.iter().any(|m| m.announce || m.drain.has_new())
    }

    /// Waits until [`Wildcard::has_new`]. Cancel-safe.
    pub async fn wait(&mut self) {
        if self.has_new() {
            return;
        }
        let Wildcard {
            members,
            created,
            arrivals,
            rescan,
            ..
        } = self;
        let any_topic = async {
            if members.is_empty() {
                pending::<()>().await;
            }
            let waits = members.iter().map(|m| Box::pin(m.drain.wait()));
            futures::future::select_all(waits).await;
        };
        tokio::select! {
            _ = any_topic => {}
            created = created.recv() => match created {
                Ok(name) => arrivals.push(name),
                Err(RecvError::Lagged(_)) => *rescan = true,
                // The registry lives as long as the server.
                Err(RecvError::Closed) => pending::<()>().await,
            },
        }
    }

    /// Emits `Left` for topics deleted since the last call and `Joined` for
    /// new ones, then reads up to `limits` from the topics in turn (see the
    /// module docs on fairness).
    pub fn next_batch(&mut self, limits: BatchLimits, emit: impl FnMut(DeliveryRef<'_>)) -> Step {
        self.deliver(limits, &mut Events(emit))
    }

    /// [`Wildcard::next_batch`] into a [`Deliver`] sink: a sink that
    /// sends frames gets each topic's messages encoded in its buffer,
    /// naming the topic ([`Drain::deliver`]).
    pub fn deliver<D: Deliver + ?Sized>(&mut self, limits: BatchLimits, sink: &mut D) -> Step {
        if let Some(end) = self.ended {
            return end;
        }
        let mut announced = self.leave_deleted(sink);
        if let Err(end) = self.admit_new_topics() {
            self.ended = Some(end);
            return end;
        }
        for m in self.members.iter_mut().filter(|m| m.announce) {
            m.announce = false;
            sink.event(DeliveryRef::Joined {
                topic: m.drain.topic().name(),
                epoch: m.drain.epoch(),
                start_seq: m.drain.start_seq(),
            });
            announced += 1;
        }
        let n = self.members.len();
        let quantum_messages = (limits.max_messages / n.max(1))
            .max(MIN_QUANTUM_MESSAGES)
            .min(limits.max_messages);
        let quantum_bytes = (limits.max_bytes / n.max(1))
            .max(MIN_QUANTUM_BYTES)
            .min(limits.max_bytes);
        let (mut messages_left, mut bytes_left) = (limits.max_messages, limits.max_bytes);
        let (mut messages, mut resyncs) = (0, 0);
        let mut next_cursor = self.cursor.wrapping_add(1);
        let mut deleted = false;
        for k in 0..n {
            if messages_left == 0 || bytes_left == 0 {
                // Out of budget: the next call starts with the first topic
                // this one did not reach.
                next_cursor = self.cursor + k;
                break;
            }
            let i = (self.cursor + k) % n;
            let member = &mut self.members[i];
            if !member.drain.has_new() {
                continue;
            }
            let quantum = BatchLimits {
                max_messages: quantum_messages.min(messages_left),
                max_bytes: quantum_bytes.min(bytes_left),
            };
            let topic = member.drain.topic().clone();
            let mut named = Named {
                sink: &mut *sink,
                topic: topic.name(),
                bytes: 0,
            };
            let step = member.drain.deliver(quantum, &mut named);
            let bytes = named.bytes;
            match step {
                Step::Delivered {
                    messages: m,
                    resyncs: r,
                } => {
                    messages += m;
                    resyncs += r;
                    messages_left = messages_left.saturating_sub(m);
                    bytes_left = bytes_left.saturating_sub(bytes);
                }
                Step::Idle => {}
                Step::TopicDeleted => deleted = true,
                Step::Lagged { .. } | Step::TooManyTopics { .. } | Step::HistoryFailed => {
                    self.ended = Some(step);
                    return step;
                }
            }
        }
        self.cursor = if n == 0 { 0 } else { next_cursor % n };
        if deleted {
            announced += self.leave_deleted(sink);
        }
        if messages + resyncs + announced == 0 {
            Step::Idle
        } else {
            Step::Delivered { messages, resyncs }
        }
    }

    /// Takes in the topics the creation feed announced (or, after it
    /// lagged, every matching topic not followed yet).
    fn admit_new_topics(&mut self) -> Result<(), Step> {
        loop {
            match self.created.try_recv() {
                Ok(name) => self.arrivals.push(name),
                Err(TryRecvError::Lagged(_)) => self.rescan = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let mut candidates: Vec<Arc<Topic>> = Vec::new();
        if std::mem::take(&mut self.rescan) {
            self.arrivals.clear();
            candidates = self.registry.matching(&self.pattern);
        } else {
            for name in std::mem::take(&mut self.arrivals) {
                if self.pattern.matches(&name) {
                    candidates.extend(self.registry.get(&name));
                }
            }
        }
        for topic in candidates {
            if self
                .members
                .iter()
                .any(|m| Arc::ptr_eq(m.drain.topic(), &topic))
            {
                continue;
            }
            // A member whose topic is gone leaves on the next call; it
            // holds no place.
            let live = self
                .members
                .iter()
                .filter(|m| !m.drain.topic().is_deleted())
                .count();
            if live >= self.limit as usize {
                return Err(Step::TooManyTopics { limit: self.limit });
            }
            // Created after the subscription started: from its first
            // message (a Resync if even that is gone already).
            let start = self.take_resume(&topic).unwrap_or(StartAt::From {
                epoch: topic.epoch(),
                next: 0,
            });
            self.join(topic, start);
        }
        Ok(())
    }

    fn take_resume(&mut self, topic: &Topic) -> Option<StartAt> {
        self.resume
            .remove(topic.name())
            .map(|(epoch, next)| StartAt::From { epoch, next })
    }

    fn join(&mut self, topic: Arc<Topic>, start: StartAt) {
        self.members.push(Member {
            drain: Drain::new(topic, start, self.policy),
            announce: true,
        });
    }

    /// Forgets members whose topic was deleted, keeping their accounting,
    /// and emits `Left` for each whose `Joined` was emitted; returns how
    /// many `Left` it emitted.
    fn leave_deleted<D: Deliver + ?Sized>(&mut self, sink: &mut D) -> usize {
        let departed = &mut self.departed;
        let mut left = 0;
        self.members.retain(|m| {
            let gone = m.drain.topic().is_deleted();
            if gone {
                let s = m.drain.stats();
                departed.delivered += s.delivered;
                departed.missed += s.missed;
                departed.resyncs += s.resyncs;
                // One never announced leaves as quietly as it came.
                if !m.announce {
                    sink.event(DeliveryRef::Left {
                        topic: m.drain.topic().name(),
                    });
                    left += 1;
                }
            }
            !gone
        });
        left
    }
}

/// One member's events on their way to the subscription's sink: each
/// names its topic, and the payload bytes are counted against the batch.
struct Named<'a, D: ?Sized> {
    sink: &'a mut D,
    topic: &'a str,
    bytes: usize,
}

impl<D: Deliver + ?Sized> Deliver for Named<'_, D> {
    fn event(&mut self, event: DeliveryRef<'_>) {
        if let DeliveryRef::Message { payload, .. } = event {
            self.bytes += payload.len();
        }
        self.sink.event(event.in_topic(self.topic));
    }

    fn frames(&mut self, need: usize) -> Option<&mut bytes::BytesMut> {
        self.sink.frames(need)
    }

    fn framed(&mut self, message: Framed) {
        self.bytes += message.payload_len;
        self.sink.framed(message);
    }

    fn named(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::ResyncRef;
    use lapwing_proto::v1::ResyncReason;
    use std::time::Duration;

    /// Small rings (a few dozen 16-byte messages) so a topic laps soon.
    fn registry(max_topics: usize) -> Arc<Registry> {
        let mut config = crate::Config::for_tests(std::path::Path::new("/unused"));
        config.limits.max_message_bytes = 256;
        config.limits.max_topics = max_topics;
        config.topic_defaults.ring_bytes = 4096;
        Arc::new(Registry::from_config(&config).unwrap())
    }

    fn publish(registry: &Registry, topic: &str, n: u64) {
        let t = registry.get_or_create(topic).unwrap();
        for _ in 0..n {
            let seq = t.head();
            t.publish(format!("{topic}/{seq:08}").as_bytes()).unwrap();
        }
    }

    fn wildcard(registry: &Arc<Registry>, pattern: &str, start: StartAt) -> Wildcard {
        Wildcard::new(
            Pattern::parse(pattern).unwrap(),
            registry.clone(),
            start,
            Vec::new(),
            LagPolicy::ResumeOldest,
            10,
        )
        .unwrap()
    }

    /// One topic as a client sees it through the subscription: each
    /// event checked against the accounting, from the topic's `Joined`.
    #[derive(Debug, Default, Clone)]
    struct Ledger {
        epoch: u64,
        start: u64,
        next: u64,
        delivered: u64,
        missed: u64,
        resyncs: Vec<(ResyncReason, u64)>,
        joins: u32,
    }

    #[derive(Debug, Default)]
    struct Client {
        topics: HashMap<String, Ledger>,
        /// Topic of each event, in arrival order.
        order: Vec<String>,
        /// Topics that left, in order.
        left: Vec<String>,
    }

    impl Client {
        fn take(&mut self, d: DeliveryRef<'_>) {
            match d {
                DeliveryRef::Left { topic } => {
                    assert!(self.topics.contains_key(topic), "{topic} left unjoined");
                    self.left.push(topic.to_owned());
                }
                DeliveryRef::Joined {
                    topic,
                    epoch,
                    start_seq,
                } => {
                    let joins = self.topics.get(topic).map_or(0, |l| l.joins);
                    self.topics.insert(
                        topic.to_owned(),
                        Ledger {
                            epoch,
                            start: start_seq,
                            next: start_seq,
                            joins: joins + 1,
                            ..Ledger::default()
                        },
                    );
                }
                DeliveryRef::Message {
                    topic,
                    seq,
                    epoch,
                    payload,
                    ..
                } => {
                    let l = self.topics.get_mut(topic).expect("Joined before events");
                    assert_eq!((epoch, seq), (l.epoch, l.next), "{topic}: gap or repeat");
                    assert_eq!(payload, format!("{topic}/{seq:08}").as_bytes());
                    l.delivered += 1;
                    l.next = seq + 1;
                    self.order.push(topic.to_owned());
                }
                DeliveryRef::Resync(ResyncRef {
                    topic,
                    missed,
                    resume_seq,
                    reason,
                    epoch,
                }) => {
                    let l = self.topics.get_mut(topic).expect("Joined before events");
                    if reason == ResyncReason::EpochChanged {
                        assert_eq!(missed, resume_seq);
                        (l.epoch, l.start, l.delivered, l.missed) = (epoch, 0, 0, 0);
                    } else {
                        assert_eq!(epoch, l.epoch);
                        assert_eq!(resume_seq, l.next + missed, "{topic}: resync adds up");
                    }
                    l.missed += missed;
                    l.next = resume_seq;
                    l.resyncs.push((reason, missed));
                }
            }
        }

        /// Reads until idle (bounded).
        fn drain(&mut self, w: &mut Wildcard, limits: BatchLimits) -> Step {
            for _ in 0..10_000 {
                match w.next_batch(limits, |d| self.take(d)) {
                    Step::Delivered { .. } => {}
                    other => return other,
                }
            }
            panic!("never idle");
        }

        fn ledger(&self, topic: &str) -> &Ledger {
            &self.topics[topic]
        }
    }

    #[test]
    fn a_lap_on_one_topic_is_that_topics_resync_and_the_other_is_untouched() {
        let r = registry(100);
        publish(&r, "prices.eur", 1);
        publish(&r, "prices.usd", 1);
        publish(&r, "other", 1);
        let mut w = wildcard(&r, "prices.*", StartAt::Latest);
        assert_eq!(w.topics(), 2, "`other` does not match");
        let mut c = Client::default();
        assert_eq!(c.drain(&mut w, BatchLimits::default()), Step::Idle);
        assert_eq!(c.topics.len(), 2, "a Joined for each matching topic");
        // eur laps its 4 KiB ring many times over; usd gets a few.
        publish(&r, "prices.eur", 2_000);
        publish(&r, "prices.usd", 5);
        c.drain(&mut w, BatchLimits::default());
        let eur = c.ledger("prices.eur");
        assert!(!eur.resyncs.is_empty(), "eur was lapped");
        assert!(eur.resyncs.iter().all(|(r, _)| *r == ResyncReason::Lapped));
        assert_eq!((eur.start, eur.next), (1, 2_001));
        assert_eq!(eur.delivered + eur.missed, 2_000, "eur: exact accounting");
        let usd = c.ledger("prices.usd");
        assert!(usd.resyncs.is_empty(), "usd is not touched by eur's lap");
        assert_eq!((usd.start, usd.delivered, usd.missed), (1, 5, 0));
        let stats = w.stats();
        assert_eq!(stats.delivered, eur.delivered + usd.delivered);
        assert_eq!(stats.missed, eur.missed);
        assert_eq!(w.lag(), 0);
    }

    #[test]
    fn a_topic_created_later_joins_from_its_first_message() {
        let r = registry(100);
        let mut w = wildcard(&r, "prices.>", StartAt::Latest);
        let mut c = Client::default();
        assert_eq!(c.drain(&mut w, BatchLimits::default()), Step::Idle);
        assert!(!w.has_new());
        // Created and published to before the subscription looks again.
        publish(&r, "prices.gbp.spot", 3);
        publish(&r, "orders.gbp", 3);
        assert!(w.has_new(), "a creation is news");
        c.drain(&mut w, BatchLimits::default());
        let gbp = c.ledger("prices.gbp.spot");
        assert_eq!((gbp.start, gbp.delivered, gbp.missed), (0, 3, 0));
        assert!(!c.topics.contains_key("orders.gbp"));
    }

    #[test]
    fn start_applies_to_the_topics_that_exist() {
        let r = registry(100);
        publish(&r, "a.x", 4);
        let mut w = wildcard(&r, "a.*", StartAt::Oldest);
        let mut c = Client::default();
        c.drain(&mut w, BatchLimits::default());
        assert_eq!(c.ledger("a.x").delivered, 4);
    }

    #[tokio::test]
    async fn wait_wakes_for_a_publish_to_any_topic_and_for_a_new_topic() {
        let r = registry(100);
        publish(&r, "w.a", 1);
        publish(&r, "w.b", 1);
        let mut w = wildcard(&r, "w.*", StartAt::Latest);
        let mut c = Client::default();
        c.drain(&mut w, BatchLimits::default());
        let publisher = r.clone();
        let task = tokio::spawn(async move { publish(&publisher, "w.b", 1) });
        tokio::time::timeout(Duration::from_secs(10), w.wait())
            .await
            .expect("woken by a publish to w.b");
        task.await.unwrap();
        c.drain(&mut w, BatchLimits::default());
        assert_eq!(c.ledger("w.b").delivered, 1);
        let publisher = r.clone();
        let task = tokio::spawn(async move { publish(&publisher, "w.c", 1) });
        tokio::time::timeout(Duration::from_secs(10), w.wait())
            .await
            .expect("woken by the creation of w.c");
        task.await.unwrap();
        c.drain(&mut w, BatchLimits::default());
        assert_eq!(c.ledger("w.c").delivered, 1);
    }

    #[test]
    fn one_hot_topic_does_not_starve_the_others() {
        let r = registry(100);
        for t in ["f.hot", "f.a", "f.b", "f.c"] {
            publish(&r, t, 1);
        }
        let mut w = wildcard(&r, "f.*", StartAt::Latest);
        let mut c = Client::default();
        c.drain(&mut w, BatchLimits::default());
        publish(&r, "f.hot", 150);
        for t in ["f.a", "f.b", "f.c"] {
            publish(&r, t, 20);
        }
        // One batch of 64 messages: each of the four gets its quantum (the
        // hot one, lapped, may spend one place on its resync).
        let limits = BatchLimits {
            max_messages: 64,
            max_bytes: 1 << 20,
        };
        w.next_batch(limits, |d| c.take(d));
        let got = |t: &str| c.order.iter().filter(|o| *o == t).count();
        for t in ["f.a", "f.b", "f.c"] {
            assert_eq!(got(t), 16, "{t} in the first batch: {:?}", c.order);
        }
        assert!((15..=16).contains(&got("f.hot")), "{:?}", c.order);
    }

    #[test]
    fn the_topic_limit_refuses_a_wide_pattern_and_ends_on_a_new_topic() {
        let r = registry(100);
        publish(&r, "l.a", 1);
        publish(&r, "l.b", 1);
        let new = |limit| {
            Wildcard::new(
                Pattern::parse("l.*").unwrap(),
                r.clone(),
                StartAt::Latest,
                Vec::new(),
                LagPolicy::ResumeOldest,
                limit,
            )
        };
        let err = new(1).unwrap_err();
        assert!(
            matches!(
                err,
                RequestError::Exhausted(Exhausted::WildcardTopics { limit: 1 })
            ),
            "{err:?}"
        );
        let mut w = new(2).unwrap();
        let mut c = Client::default();
        assert_eq!(c.drain(&mut w, BatchLimits::default()), Step::Idle);
        publish(&r, "l.c", 1);
        let end = c.drain(&mut w, BatchLimits::default());
        assert_eq!(end, Step::TooManyTopics { limit: 2 });
        assert_eq!(
            w.next_batch(BatchLimits::default(), |_| {}),
            end,
            "stays ended"
        );
    }

    #[test]
    fn resume_is_per_topic_and_exact() {
        let r = registry(100);
        publish(&r, "r.kept", 10);
        publish(&r, "r.lost", 500);
        publish(&r, "r.new", 3);
        let kept = r.get("r.kept").unwrap().epoch();
        let lost = r.get("r.lost").unwrap().epoch();
        let resume = vec![
            TopicPosition {
                topic: "r.kept".into(),
                epoch: kept,
                next: 6,
            },
            TopicPosition {
                topic: "r.lost".into(),
                epoch: lost,
                next: 2,
            },
            TopicPosition {
                topic: "r.gone".into(),
                epoch: 5,
                next: 9,
            },
        ];
        let mut w = Wildcard::new(
            Pattern::parse("r.*").unwrap(),
            r.clone(),
            StartAt::Oldest,
            resume,
            LagPolicy::ResumeOldest,
            10,
        )
        .unwrap();
        let mut c = Client::default();
        c.drain(&mut w, BatchLimits::default());
        let l = c.ledger("r.kept");
        assert_eq!((l.start, l.delivered, l.missed, l.next), (6, 4, 0, 10));
        let l = c.ledger("r.lost");
        assert_eq!(l.start, 2);
        assert_eq!(l.resyncs[0].0, ResyncReason::NotRetained);
        assert_eq!(l.delivered + l.missed, 498);
        let l = c.ledger("r.new");
        assert_eq!(
            (l.start, l.delivered),
            (0, 3),
            "not in the list: from oldest"
        );
        // `r.gone` is re-created in a new epoch: its old position is
        // answered with EPOCH_CHANGED.
        publish(&r, "r.gone", 2);
        c.drain(&mut w, BatchLimits::default());
        let l = c.ledger("r.gone");
        assert_eq!(l.resyncs, vec![(ResyncReason::EpochChanged, 0)]);
        assert_eq!((l.delivered, l.next), (2, 2));
    }

    #[test]
    fn bad_starts_and_resume_lists_are_refused() {
        let r = registry(100);
        let new = |start, resume| {
            Wildcard::new(
                Pattern::parse("b.*").unwrap(),
                r.clone(),
                start,
                resume,
                LagPolicy::ResumeOldest,
                2,
            )
        };
        let after = StartAt::From { epoch: 1, next: 1 };
        assert!(matches!(
            new(after, Vec::new()),
            Err(RequestError::InvalidArgument(_))
        ));
        let at = |topic: &str| TopicPosition {
            topic: topic.into(),
            epoch: 1,
            next: 0,
        };
        assert!(matches!(
            new(StartAt::Latest, vec![at("c.x")]),
            Err(RequestError::InvalidArgument(_))
        ));
        assert!(matches!(
            new(StartAt::Latest, vec![at("b.x"), at("b.y"), at("b.z")]),
            Err(RequestError::Exhausted(Exhausted::WildcardTopics { .. }))
        ));
    }

    #[test]
    fn a_deleted_topic_leaves_and_rejoins_in_its_new_epoch() {
        let r = registry(100);
        publish(&r, "d.x", 2);
        let mut w = wildcard(&r, "d.*", StartAt::Oldest);
        let mut c = Client::default();
        c.drain(&mut w, BatchLimits::default());
        let first_epoch = c.ledger("d.x").epoch;
        r.delete("d.x").unwrap();
        assert!(w.has_new(), "a deletion is news");
        assert_eq!(c.drain(&mut w, BatchLimits::default()), Step::Idle);
        assert_eq!(c.left, ["d.x"], "told once");
        assert_eq!(w.topics(), 0);
        assert_eq!(
            w.stats().delivered,
            2,
            "the departed topic's accounting stays"
        );
        publish(&r, "d.x", 3);
        c.drain(&mut w, BatchLimits::default());
        let l = c.ledger("d.x");
        assert_ne!(l.epoch, first_epoch);
        assert_eq!((l.joins, l.start, l.delivered), (2, 0, 3));
    }

    #[test]
    fn a_topic_deleted_before_it_was_announced_leaves_without_a_word() {
        let r = registry(100);
        publish(&r, "q.x", 1);
        let mut w = wildcard(&r, "q.*", StartAt::Latest);
        r.delete("q.x").unwrap();
        let mut c = Client::default();
        c.drain(&mut w, BatchLimits::default());
        assert!(c.topics.is_empty() && c.left.is_empty(), "{c:?}");
        assert_eq!(w.topics(), 0);
    }

    #[test]
    fn a_lagging_creation_feed_falls_back_to_a_rescan() {
        let r = registry(5_000);
        let mut w = wildcard(&r, "many.>", StartAt::Latest);
        let mut c = Client::default();
        c.drain(&mut w, BatchLimits::default());
        // More creations than the feed holds; only a few match.
        for i in 0..1_500 {
            r.get_or_create(&format!("filler.{i}")).unwrap();
        }
        publish(&r, "many.a", 1);
        for i in 1_500..3_000 {
            r.get_or_create(&format!("filler.{i}")).unwrap();
        }
        publish(&r, "many.b", 1);
        c.drain(&mut w, BatchLimits::default());
        assert_eq!(c.ledger("many.a").delivered, 1);
        assert_eq!(c.ledger("many.b").delivered, 1);
    }
    #[test]
    fn frames_copied_from_the_rings_name_their_topics_as_the_events_do() {
        let r = registry(100);
        publish(&r, "prices.eur", 1);
        publish(&r, "prices.usd", 1);
        let limits = BatchLimits {
            max_messages: 20,
            max_bytes: 1024,
        };
        let mut by_events = wildcard(&r, "prices.*", StartAt::Oldest);
        let mut by_frames = wildcard(&r, "prices.*", StartAt::Oldest);
        let mut expected = bytes::BytesMut::new();
        let mut sink = crate::drain::FrameSink::new();
        for _ in 0..3 {
            publish(&r, "prices.eur", 300);
            publish(&r, "prices.usd", 7);
            let mut events = Events(|d: DeliveryRef<'_>| d.encode_frame(&mut expected));
            for (w, sink) in [
                (&mut by_events, &mut events as &mut dyn Deliver),
                (&mut by_frames, &mut sink),
            ] {
                assert!(
                    (0..10_000).any(|_| w.deliver(limits, sink) == Step::Idle),
                    "never idle"
                );
            }
        }
        assert_eq!(sink.out, expected, "byte for byte");
        assert_eq!(by_frames.stats(), by_events.stats());
        assert!(by_frames.stats().resyncs > 0, "eur lapped its ring");
        assert_eq!(sink.framed as u64, by_frames.stats().delivered);
        // And a client reading the frames sees every topic's accounting.
        let mut c = Client::default();
        let mut codec = lapwing_proto::FrameCodec::<lapwing_proto::v1::Delivery>::new(1 << 20);
        let mut frames = sink.out;
        while let Some(d) = tokio_util::codec::Decoder::decode(&mut codec, &mut frames).unwrap() {
            use lapwing_proto::v1::delivery::Kind;
            match d.kind.unwrap() {
                Kind::Joined(j) => c.take(DeliveryRef::Joined {
                    topic: &j.topic,
                    epoch: j.epoch,
                    start_seq: j.start_seq,
                }),
                Kind::Message(m) => c.take(DeliveryRef::Message {
                    seq: m.seq,
                    epoch: m.epoch,
                    publish_time_unix_nanos: m.publish_time_unix_nanos,
                    payload: &m.payload,
                    topic: &m.topic,
                }),
                Kind::Resync(x) => c.take(DeliveryRef::Resync(ResyncRef {
                    missed: x.missed,
                    resume_seq: x.resume_seq,
                    reason: ResyncReason::try_from(x.reason).unwrap(),
                    epoch: x.epoch,
                    topic: &x.topic,
                })),
                Kind::Left(l) => c.take(DeliveryRef::Left { topic: &l.topic }),
            }
        }
        let eur = c.ledger("prices.eur");
        assert_eq!(eur.delivered + eur.missed, 901);
        let usd = c.ledger("prices.usd");
        assert_eq!((usd.delivered, usd.missed), (22, 0));
    }
}
