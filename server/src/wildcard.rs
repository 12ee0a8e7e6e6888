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
//! broadcast rescans instead. A deleted topic leaves without an event (its
//! drain ends); if it is created again, it joins again with its new epoch.
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

use crate::drain::{BatchLimits, DeliveryRef, Drain, DrainStats, StartAt, Step};
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

    /// Emits pending `Joined` events, then reads up to `limits` from the
    /// topics in turn (see the module docs on fairness).
    pub fn next_batch(
        &mut self,
        limits: BatchLimits,
        mut emit: impl FnMut(DeliveryRef<'_>),
    ) -> Step {
        if let Some(end) = self.ended {
            return end;
        }
        if let Err(end) = self.admit_new_topics() {
            self.ended = Some(end);
            return end;
        }
        let mut joined = 0;
        for m in self.members.iter_mut().filter(|m| m.announce) {
            m.announce = false;
            emit(DeliveryRef::Joined {
                topic: m.drain.topic().name(),
                epoch: m.drain.epoch(),
                start_seq: m.drain.start_seq(),
            });
            joined += 1;
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
            let mut bytes = 0;
            let step = member.drain.next_batch(quantum, |d| {
                if let DeliveryRef::Message { payload, .. } = d {
                    bytes += payload.len();
                }
                emit(d.in_topic(topic.name()));
            });
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
                Step::Lagged { .. } | Step::TooManyTopics { .. } => {
                    self.ended = Some(step);
                    return step;
                }
            }
        }
        self.cursor = if n == 0 { 0 } else { next_cursor % n };
        if deleted {
            self.drop_deleted();
        }
        if messages + resyncs + joined == 0 {
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
            self.drop_deleted();
            if self.members.len() >= self.limit as usize {
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

    /// Forgets members whose topic was deleted, keeping their accounting.
    fn drop_deleted(&mut self) {
        let departed = &mut self.departed;
        self.members.retain(|m| {
            let gone = m.drain.topic().is_deleted();
            if gone {
                let s = m.drain.stats();
                departed.delivered += s.delivered;
                departed.missed += s.missed;
                departed.resyncs += s.resyncs;
            }
            !gone
        });
    }
}
