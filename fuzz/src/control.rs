//! Target `control`: a QUIC control stream, driven through the server's
//! session layer ([`Session::control`]) with a fake edge.
//!
//! Input layout: byte 0 is how many messages are published to topics `a`
//! and `b` before the client connects (so resumes and `Oldest` meet a ring
//! that already lapped); byte 1's low nibble is how many messages each
//! live subscription's topic gets after every request, and its bit 4
//! deletes topic `b` after every request; the rest is the control stream's
//! bytes, decoded with the same codec and limit as the QUIC edge. Epochs
//! are random, so a resume from epoch [`SAME_EPOCH`] is rewritten to the
//! topic's current epoch.
//!
//! The fake edge does what `edge/quic/control.rs` does, without sockets:
//! Hello (version, token and its principal, admission through the shared
//! gate), then every request through [`Session::control`] as that
//! principal, applying its action to a map of live subscriptions, and
//! draining each live subscription after every request as its task would.
//! Checked: no panic; each request gets the response its kind calls for
//! (same id or nonce; a subscription only for a valid topic and lag policy,
//! never over the cap, never a duplicate id, never where the principal's
//! rules deny it); every response fits the client's control-frame limit;
//! the connection table agrees with the live set; every subscription's
//! events keep the delivery contract (contiguous seqs, a Resync accounting
//! exactly for each gap, one epoch); and when the client leaves, its
//! connection slot and table entry are freed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use lapwing_proto::pattern::Pattern;
use lapwing_proto::v1::{self, control_request, control_response, ErrorCode, ResyncReason};
use lapwing_proto::{FrameCodec, PRE_HELLO_MAX_FRAME_BYTES, PROTOCOL_VERSION};
use lapwing_server::auth::Auth;
use lapwing_server::config::{PrincipalConfig, RulesConfig};
use lapwing_server::connections::Connections;
use lapwing_server::drain::{BatchLimits, Step};
use lapwing_server::limits::Limits;
use lapwing_server::metrics::Metrics;
use lapwing_server::permissions::Guard;
use lapwing_server::registry::Registry;
use lapwing_server::session::{Action, Core, LiveSubscriptions, Session, Subscription};
use lapwing_server::transport::Transport;
use lapwing_server::Config;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

/// A token of `[auth] tokens`: a principal that may subscribe anywhere
/// (the seeds' Hello carries it).
pub const TOKEN: &str = "secret-token";
/// The token of principal `limited`, whose subscribe rules are
/// `allow = ["a", "b", "x.>", "inbox.{name}.>"]`, `deny = ["x.secret"]`.
pub const LIMITED_TOKEN: &str = "limited-token";
/// Live subscriptions per connection: small, so the cap is reached.
pub const MAX_SUBSCRIPTIONS: u32 = 3;
/// Topics one wildcard subscription may follow: small, so the limit is
/// reached.
pub const MAX_TOPICS_PER_WILDCARD: u32 = 2;
/// Topics one connection may create: small, so the quota is reached.
pub const TOPICS_CREATED: u32 = 3;
/// Topics published to before the client connects (not counted in its quota).
pub const PRE_PUBLISHED: [&str; 2] = ["a", "b"];

/// `After.epoch` that the harness replaces by the topic's current epoch.
pub const SAME_EPOCH: u64 = 1;

/// A small batch, so a drain takes several batches (as under load).
const BATCH: BatchLimits = BatchLimits {
    max_messages: 7,
    max_bytes: 512,
};

/// The server's config: tiny rings (4 KiB, a few dozen messages) so
/// publishes lap them; everything else as tests use it.
pub fn config() -> Config {
    let mut config = Config::for_tests(Path::new("/nonexistent/lapwing-fuzz"));
    config.auth.tokens = vec![TOKEN.to_owned()];
    let rules = |allow: &[&str], deny: &[&str]| RulesConfig {
        allow: allow.iter().map(|p| (*p).to_owned()).collect(),
        deny: deny.iter().map(|p| (*p).to_owned()).collect(),
    };
    config.principals = vec![PrincipalConfig {
        name: "limited".into(),
        token: Some(LIMITED_TOKEN.into()),
        publish: rules(&[">"], &[]),
        subscribe: rules(&["a", "b", "x.>", "inbox.{name}.>"], &["x.secret"]),
        ..PrincipalConfig::default()
    }];
    config.limits.max_message_bytes = 1024;
    config.limits.max_connections = 2;
    config.limits.max_subscriptions_per_connection = MAX_SUBSCRIPTIONS;
    config.limits.topics_created_per_connection = TOPICS_CREATED;
    config.limits.max_topics_per_wildcard = MAX_TOPICS_PER_WILDCARD;
    config.limits.max_topics = 16;
    config.topic_defaults.ring_bytes = 4096;
    config
}

/// One set of metrics for every run of the process: building a Prometheus
/// recorder costs more than the rest of a run, and nothing here reads them.
fn metrics() -> Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    METRICS.get_or_init(|| Arc::new(Metrics::new())).clone()
}

fn core(config: &Config) -> Arc<Core> {
    Core::new(
        Arc::new(Registry::from_config(config).expect("the fuzz config is valid")),
        Limits::from_config(config),
        Auth::from_config(config).expect("the fuzz principals are valid"),
        Arc::new(Connections::new(metrics())),
        config.limits.partial_frame_bytes,
        CancellationToken::new(),
        None,
    )
}

/// Runs one input (see the module documentation for its layout).
pub fn run(data: &[u8]) {
    let _ = run_counting(data);
}

/// What one input made the session do (for checking that the seeds reach
/// the interesting paths).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Sessions admitted after Hello.
    pub admitted: u64,
    /// Subscriptions started.
    pub subscribed: u64,
    /// Requests answered with an Error.
    pub refused: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Resyncs delivered.
    pub resyncs: u64,
    /// Subscriptions that ended on their own (lagged, topic deleted, a
    /// wildcard over its topic limit).
    pub ended: u64,
    /// Subscribes refused with PERMISSION_DENIED.
    pub denied: u64,
    /// Topics joined by wildcard subscriptions.
    pub joined: u64,
    /// Deleted topics that left wildcard subscriptions.
    pub left: u64,
}

/// [`run`], returning what happened.
pub fn run_counting(data: &[u8]) -> Counts {
    let [pre_published, per_step, wire @ ..] = data else {
        return Counts::default();
    };
    let config = config();
    let core = core(&config);
    for name in PRE_PUBLISHED {
        let topic = core.registry.get_or_create(name).expect("a valid name");
        for i in 0..*pre_published {
            topic.publish(&[i; 24]).expect("a small payload");
        }
    }
    let mut edge = FakeEdge {
        core: core.clone(),
        live: Live::default(),
        publishes: usize::from(per_step & 0x0f),
        delete_b: per_step & 0x10 != 0,
        counts: Counts::default(),
    };
    edge.serve(wire);
    let counts = edge.counts;
    drop(edge);
    assert!(
        core.connections.list().is_empty(),
        "the connection table kept a connection that left"
    );
    assert_eq!(
        core.free_slots(),
        config.limits.max_connections,
        "a connection slot was not freed"
    );
    counts
}

/// One live subscription and what the client has seen of it.
struct LiveSub {
    sub: Subscription,
    /// Per topic: (epoch, the seq of the next event (a Message's seq or a
    /// Resync's accounting), whether no event of it came yet). A wildcard
    /// subscription learns its topics from `Joined` events.
    topics: HashMap<String, Position>,
}

#[derive(Debug, Clone, Copy)]
struct Position {
    epoch: u64,
    next_seq: u64,
    fresh: bool,
}

impl Position {
    fn new(epoch: u64, next_seq: u64) -> Position {
        Position {
            epoch,
            next_seq,
            fresh: true,
        }
    }
}

#[derive(Default)]
struct Live(HashMap<u64, LiveSub>);

impl LiveSubscriptions for Live {
    fn contains(&self, id: u64) -> bool {
        self.0.contains_key(&id)
    }

    fn count(&self) -> usize {
        self.0.len()
    }
}

struct FakeEdge {
    core: Arc<Core>,
    live: Live,
    publishes: usize,
    delete_b: bool,
    counts: Counts,
}

impl FakeEdge {
    fn serve(&mut self, wire: &[u8]) {
        // The edge reads the control stream with the pre-Hello limit for good.
        let mut codec = FrameCodec::<v1::ControlRequest>::new(PRE_HELLO_MAX_FRAME_BYTES);
        let mut buf = BytesMut::from(wire);
        let Ok(Some(first)) = codec.decode(&mut buf) else {
            return;
        };
        let Some((session, guard)) = self.hello(first) else {
            return;
        };
        self.counts.admitted += 1;
        // Then one request after another until the stream ends or breaks
        // (the edge closes the connection on an undecodable frame).
        while let Ok(Some(request)) = codec.decode(&mut buf) {
            self.request(&session, &guard, request);
            self.after_request();
            assert_eq!(
                session.connection().subscription_count(),
                self.live.0.len(),
                "the connection table and the live set disagree"
            );
        }
        // The client leaves: its subscriptions end with the session.
        self.live.0.clear();
        drop(session);
    }

    /// What the QUIC edge does with the first frame.
    fn hello(&self, first: v1::ControlRequest) -> Option<(Session, Guard)> {
        let Some(control_request::Kind::Hello(hello)) = first.kind else {
            return None;
        };
        let known = [TOKEN, LIMITED_TOKEN].contains(&hello.token.as_str());
        let admitted = if hello.version != PROTOCOL_VERSION {
            Err(ErrorCode::UnsupportedVersion)
        } else {
            match self.core.authenticate(&hello.token) {
                Err(e) => {
                    assert!(!known, "token {:?} was refused", hello.token);
                    Err(e.code())
                }
                Ok(guard) => {
                    assert!(known, "unknown token {:?} was accepted", hello.token);
                    let peer = "127.0.0.1:9".parse().expect("an address");
                    self.core
                        .admit(Transport::Quic, peer, &hello.client_name)
                        .map(|session| (session, guard))
                        .map_err(|e| e.code())
                }
            }
        };
        match admitted {
            Ok((session, guard)) => {
                let name = session.connection().info().client_name;
                assert!(
                    name.len() <= lapwing_server::limits::MAX_CLIENT_NAME_BYTES,
                    "client name of {} bytes kept",
                    name.len()
                );
                assert!(hello.client_name.starts_with(&name));
                Some((session, guard))
            }
            Err(code) => {
                assert!(matches!(
                    code,
                    ErrorCode::UnsupportedVersion | ErrorCode::Unauthenticated
                ));
                None
            }
        }
    }

    fn request(&mut self, session: &Session, guard: &Guard, request: v1::ControlRequest) {
        use control_request::Kind as Req;
        use control_response::Kind as Resp;
        let mut request = request;
        self.current_epoch_for_one(&mut request);
        let reply = session.control(guard, request.clone(), &self.live);
        let response = reply
            .response
            .kind
            .clone()
            .expect("every request is answered");
        assert!(
            prost::Message::encoded_len(&reply.response) <= PRE_HELLO_MAX_FRAME_BYTES,
            "a response over the client's control-frame limit: {response:?}"
        );
        if let Resp::Error(e) = &response {
            self.counts.refused += 1;
            let code = ErrorCode::try_from(e.code).expect("a known error code");
            assert!(
                !matches!(code, ErrorCode::Unspecified | ErrorCode::Internal),
                "{code:?} for {request:?}: {e:?}"
            );
            assert!(!e.message.is_empty(), "an error without a message");
        }
        match (request.kind, response, reply.action) {
            (Some(Req::Subscribe(s)), Resp::SubscribeOk(ok), Some(Action::Start(sub))) => {
                let id = s.subscription_id;
                assert_eq!((ok.subscription_id, sub.id()), (id, id));
                assert!(!self.live.contains(id), "duplicate subscription id {id}");
                assert!(
                    self.live.count() < MAX_SUBSCRIPTIONS as usize,
                    "a subscription over the cap"
                );
                assert!(
                    crate::topic::follows_pattern_rules(&s.topic),
                    "subscribed to invalid topic {:?}",
                    s.topic
                );
                assert!(
                    v1::LagPolicy::try_from(s.lag_policy).is_ok(),
                    "unknown lag policy {} accepted",
                    s.lag_policy
                );
                if guard.principal().name() == "limited" {
                    assert!(
                        limited_may_subscribe(&s.topic),
                        "principal `limited` subscribed to {:?}",
                        s.topic
                    );
                }
                assert_eq!(sub.target(), s.topic);
                let mut topics = HashMap::new();
                if crate::topic::follows_rules(&s.topic) {
                    let topic = self.core.registry.get(&s.topic).expect("the topic exists");
                    assert_eq!(ok.epoch, topic.epoch());
                    topics.insert(s.topic.clone(), Position::new(ok.epoch, ok.start_seq));
                } else {
                    assert!(
                        ok.topics <= MAX_TOPICS_PER_WILDCARD,
                        "a wildcard over its topic limit"
                    );
                }
                let live = LiveSub { sub: *sub, topics };
                self.live.0.insert(id, live);
                self.counts.subscribed += 1;
            }
            (Some(Req::Subscribe(s)), Resp::Error(e), None) => {
                let code = ErrorCode::try_from(e.code).expect("a known error code");
                assert_eq!(e.subscription_id, s.subscription_id);
                assert!(
                    matches!(
                        code,
                        ErrorCode::InvalidSubscription
                            | ErrorCode::InvalidTopic
                            | ErrorCode::TooManySubscriptions
                            | ErrorCode::Protocol
                            | ErrorCode::ResourceExhausted
                            | ErrorCode::TopicNotFound
                            | ErrorCode::PermissionDenied
                            | ErrorCode::InvalidArgument
                    ),
                    "Subscribe refused with {code:?}: {e:?}"
                );
                if self.live.contains(s.subscription_id) {
                    assert_eq!(code, ErrorCode::InvalidSubscription);
                }
                if code == ErrorCode::PermissionDenied {
                    self.counts.denied += 1;
                }
                // (A malformed name may be refused by either check first.)
                if code == ErrorCode::PermissionDenied
                    && crate::topic::follows_pattern_rules(&s.topic)
                {
                    assert_eq!(
                        guard.principal().name(),
                        "limited",
                        "everything-principal denied"
                    );
                    assert!(
                        !limited_may_subscribe(&s.topic),
                        "principal `limited` denied {:?}",
                        s.topic
                    );
                }
            }
            (Some(Req::Unsubscribe(u)), Resp::Unsubscribed(done), Some(Action::Stop(id))) => {
                assert_eq!(
                    (done.subscription_id, id),
                    (u.subscription_id, u.subscription_id)
                );
                assert!(
                    self.live.0.remove(&id).is_some(),
                    "unsubscribed {id}, not live"
                );
            }
            (Some(Req::Unsubscribe(u)), Resp::Error(e), None) => {
                assert!(!self.live.contains(u.subscription_id), "live {u:?} refused");
                assert_eq!(e.code, ErrorCode::InvalidSubscription as i32);
                assert_eq!(e.subscription_id, u.subscription_id);
            }
            (Some(Req::Ping(p)), Resp::Pong(pong), None) => assert_eq!(pong.nonce, p.nonce),
            (Some(Req::Hello(_)) | None, Resp::Error(e), None) => {
                assert_eq!(e.code, ErrorCode::Protocol as i32);
            }
            (request, response, action) => {
                panic!("{request:?} answered {response:?} with action {action:?}")
            }
        }
    }

    /// Epochs are random, so an input cannot name a topic's current one:
    /// a resume from epoch 1 stands for a resume from the current epoch
    /// (when the topic exists), so resumes within an epoch are reached too.
    fn current_epoch_for_one(&self, request: &mut v1::ControlRequest) {
        use v1::start_position::Kind;
        let Some(control_request::Kind::Subscribe(s)) = &mut request.kind else {
            return;
        };
        let Some(Kind::After(after)) = s.start.as_mut().and_then(|p| p.kind.as_mut()) else {
            return;
        };
        if after.epoch == SAME_EPOCH {
            if let Some(topic) = self.core.registry.get(&s.topic) {
                after.epoch = topic.epoch();
            }
        }
    }

    /// Publishes, drains every live subscription as its task would
    /// (checking the delivery contract), then deletes.
    fn after_request(&mut self) {
        let registry = &self.core.registry;
        for live in self.live.0.values() {
            let pattern = Pattern::parse(live.sub.target()).expect("subscribed to a pattern");
            for topic in registry.matching(&pattern) {
                for i in 0..self.publishes {
                    let _ = topic.publish(&[i as u8; 40]);
                }
            }
        }
        let mut ended = Vec::new();
        let counts = &mut self.counts;
        for (id, live) in &mut self.live.0 {
            // Bounded: a ring of 4 KiB holds at most a few dozen messages,
            // and at most 15 were published since the last drain.
            for _ in 0..64 {
                let step = drain_once(live, counts);
                if let Some(err) = live.sub.end(step) {
                    let code = err.code();
                    assert!(matches!(
                        code,
                        ErrorCode::Lagged | ErrorCode::TopicNotFound | ErrorCode::ResourceExhausted
                    ));
                    ended.push(*id);
                    counts.ended += 1;
                    break;
                }
                if step == Step::Idle {
                    break;
                }
            }
        }
        for id in ended {
            self.live.0.remove(&id);
        }
        // After the drain, so a wildcard has announced `b` before it goes
        // (and says `Left` on the next drain).
        if self.delete_b && self.core.registry.get("b").is_some() {
            self.core.registry.delete("b").expect("b exists");
        }
    }
}

/// Principal `limited`'s subscribe rules, re-stated without the matcher:
/// `a`, `b`, anything under `x.` but what may be `x.secret` itself (the
/// pattern `x.secret`, `x.*` or `x.>`), anything under `inbox.limited.`.
fn limited_may_subscribe(topic: &str) -> bool {
    let under = |prefix: &str| topic.len() > prefix.len() && topic.starts_with(prefix);
    let may_be_secret = matches!(topic, "x.secret" | "x.*" | "x.>");
    topic == "a" || topic == "b" || (under("x.") && !may_be_secret) || under("inbox.limited.")
}

/// One batch of one subscription, each event checked against what the
/// client has seen so far.
fn drain_once(live: &mut LiveSub, counts: &mut Counts) -> Step {
    let mut seen = Vec::new();
    let step = live.sub.next_batch(BATCH, |d| seen.push(d.to_delivery()));
    let target = live.sub.target().to_owned();
    let wildcard = !crate::topic::follows_rules(&target);
    for delivery in seen {
        let kind = delivery.kind.expect("an event");
        let named = match &kind {
            v1::delivery::Kind::Message(m) => &m.topic,
            v1::delivery::Kind::Resync(r) => &r.topic,
            v1::delivery::Kind::Joined(j) => &j.topic,
            v1::delivery::Kind::Left(l) => &l.topic,
        };
        assert_eq!(
            named.is_empty(),
            !wildcard,
            "events name their topic exactly on a wildcard subscription"
        );
        let topic = if wildcard {
            named.clone()
        } else {
            target.clone()
        };
        if let v1::delivery::Kind::Joined(j) = kind {
            assert!(wildcard, "Joined on a subscription to one topic");
            let pattern = Pattern::parse(&target).expect("a pattern");
            assert!(
                pattern.matches(&j.topic),
                "joined {:?} under {target}",
                j.topic
            );
            live.topics
                .insert(j.topic, Position::new(j.epoch, j.start_seq));
            counts.joined += 1;
            continue;
        }
        if let v1::delivery::Kind::Left(l) = kind {
            assert!(wildcard, "Left on a subscription to one topic");
            assert!(
                live.topics.remove(&l.topic).is_some(),
                "left {:?}, which it never joined",
                l.topic
            );
            counts.left += 1;
            continue;
        }
        let at = live
            .topics
            .get_mut(&topic)
            .expect("an event of a topic the subscription follows (Joined first)");
        let first = std::mem::replace(&mut at.fresh, false);
        match kind {
            v1::delivery::Kind::Message(m) => {
                assert_eq!(m.epoch, at.epoch, "a message from another epoch");
                assert_eq!(
                    m.seq, at.next_seq,
                    "gap without a Resync: expected seq {}, got {}",
                    at.next_seq, m.seq
                );
                assert_eq!(m.payload.len() % 8, 0, "a payload the harness never sent");
                at.next_seq = m.seq + 1;
                counts.messages += 1;
            }
            v1::delivery::Kind::Resync(r) => {
                assert_eq!(r.epoch, at.epoch, "a resync from another epoch");
                let reason = ResyncReason::try_from(r.reason).expect("a known reason");
                assert_ne!(reason, ResyncReason::Unspecified);
                if reason == ResyncReason::EpochChanged {
                    // Accounting restarts at seq 0 of the new epoch; with
                    // nothing held, nothing was missed.
                    assert!(first, "EPOCH_CHANGED after the first event");
                    assert_eq!(r.missed, r.resume_seq, "EPOCH_CHANGED restarts at seq 0");
                } else {
                    assert!(r.missed > 0, "a Resync that missed nothing: {r:?}");
                }
                assert_eq!(
                    at.next_seq.checked_add(r.missed),
                    Some(r.resume_seq),
                    "Resync does not account for the gap: at seq {}, {r:?}",
                    at.next_seq
                );
                at.next_seq = r.resume_seq;
                counts.resyncs += 1;
            }
            v1::delivery::Kind::Joined(_) | v1::delivery::Kind::Left(_) => {
                unreachable!("handled above")
            }
        }
    }
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_config_is_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn the_seeds_reach_every_path_the_target_checks() {
        let mut total = Counts::default();
        for seed in crate::seeds::all().iter().filter(|s| s.target == "control") {
            let c = run_counting(&seed.bytes);
            total.admitted += c.admitted;
            total.subscribed += c.subscribed;
            total.refused += c.refused;
            total.messages += c.messages;
            total.resyncs += c.resyncs;
            total.ended += c.ended;
            total.denied += c.denied;
            total.joined += c.joined;
            total.left += c.left;
        }
        assert!(
            total.admitted > 0
                && total.subscribed > 0
                && total.refused > 0
                && total.messages > 0
                && total.resyncs > 0
                && total.ended > 0
                && total.denied > 0
                && total.joined > 0
                && total.left > 0,
            "{total:?}"
        );
    }
}
