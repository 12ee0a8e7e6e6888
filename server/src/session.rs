//! The transport-neutral session layer: every rule a client meets, once,
//! for both edges.
//!
//! The edges own sockets, streams, framing and flow control; this module
//! owns what a request *means* (the seam mini-redis draws between its
//! connection and its commands):
//!
//! - **Admission** ([`Core::admit`]): one connection gate shared by QUIC and
//!   gRPC (`limits.max_connections` counts both), taken only after the
//!   handshake, so a socket that never completes one holds no slot; the
//!   connection-table entry; the client's name capped at
//!   [`crate::limits::MAX_CLIENT_NAME_BYTES`].
//! - **Who the client is** ([`Core::identify`]): the principal a verified
//!   client certificate or the token names (QUIC: once, at Hello; gRPC: on
//!   every call), as a [`Guard`] that checks and counts its permissions and
//!   follows reloads of the principals.
//! - **Subscribe** ([`Session::subscribe`]): the principal's permission, the
//!   lag policy, the per-connection subscription cap, get-or-create of the
//!   topic within the connection's topic-creation quota, the `Drain`, and
//!   its meter; for a pattern, a [`Wildcard`] over every matching topic
//!   (it creates none); a reload that withdraws the permission ends it
//!   ([`Subscription::revoked`]).
//! - **Publish** ([`Session::publisher`]): a [`TopicPublisher`] bound to
//!   the same quota and permissions; on gRPC a cap on publish streams per
//!   connection ([`Session::publish_stream`]).
//! - **The per-batch bookkeeping** ([`Subscription::next_batch`]): read a
//!   batch, emit its events, update the meter and the metrics once.
//! - **The control protocol** ([`Session::control`]): Subscribe,
//!   Unsubscribe, Ping and misplaced frames, answered without I/O, so it is
//!   tested (and fuzzed) with a fake set of live subscriptions.
//!
//! Every refusal is a [`RequestError`], whose one code table is in
//! `crate::error`; each edge wraps the code in its own carrier.

use std::net::SocketAddr;
use std::sync::Arc;

use lapwing_proto::v1::{
    self, control_request, control_response, ControlRequest, ControlResponse, LagPolicy,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, AuthError, Directory};
use crate::backbone::Backbone;
use crate::budget::Budget;
use crate::connections::{
    BatchTally, Connection, Connections, Metered, SubscriptionGuard, Tallied, Tracked,
};
use crate::drain::{BatchLimits, Deliver, DeliveryRef, Drain, DrainStats, Events, StartAt, Step};
use crate::error::{Exhausted, RequestError};
use crate::limits::{self, Limits};
use crate::permissions::{Action as Permission, Denials, Guard};
use crate::registry::{CreationQuota, Registry};
use crate::topic_publisher::TopicPublisher;
use crate::transport::Transport;
use crate::wildcard::{TopicPosition, Wildcard};
use lapwing_proto::pattern::Pattern;

/// How long a subscribe may wait for the backbone to make its topic ready
/// ([`Session::prepare_subscribe`]).
pub const PREPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// What every session of either edge shares: the server's state and rules.
#[derive(Debug)]
pub struct Core {
    /// The topics.
    pub registry: Arc<Registry>,
    /// The limits in force.
    pub limits: Limits,
    /// Tokens and the principals they name (replaced by a reload).
    pub directory: Arc<Directory>,
    /// The connection table.
    pub connections: Arc<Connections>,
    /// Bytes held for partial frames, both edges (`limits.partial_frame_bytes`).
    pub partial_frames: Arc<Budget>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Permission denials, per action (`lapwing_permission_denied_total`).
    pub denials: Arc<Denials>,
    /// Cluster mode: the backbone the covered topics go through.
    pub backbone: Option<Arc<Backbone>>,
    gate: Arc<Semaphore>,
}

impl Core {
    /// The shared state of a server.
    pub fn new(
        registry: Arc<Registry>,
        limits: Limits,
        auth: Auth,
        connections: Arc<Connections>,
        partial_frame_bytes: usize,
        shutdown: CancellationToken,
        backbone: Option<Arc<Backbone>>,
    ) -> Arc<Core> {
        Arc::new(Core {
            gate: Arc::new(Semaphore::new(limits.max_connections)),
            registry,
            limits,
            directory: Directory::new(auth),
            connections,
            partial_frames: Budget::new(partial_frame_bytes),
            shutdown,
            denials: Arc::default(),
            backbone,
        })
    }

    /// Admits a connection whose handshake is done: takes a slot of the
    /// shared gate and registers it in the connection table.
    pub fn admit(
        self: &Arc<Self>,
        transport: Transport,
        peer: SocketAddr,
        client_name: &str,
    ) -> Result<Session, RequestError> {
        self.admit_with_certificate(transport, peer, client_name, None)
    }

    /// [`Core::admit`] for a connection that presented a verified client
    /// certificate (DER), kept for identifying its calls (gRPC).
    pub fn admit_with_certificate(
        self: &Arc<Self>,
        transport: Transport,
        peer: SocketAddr,
        client_name: &str,
        certificate: Option<Vec<u8>>,
    ) -> Result<Session, RequestError> {
        if self.shutdown.is_cancelled() {
            return Err(RequestError::ShuttingDown);
        }
        let permit = self
            .gate
            .clone()
            .try_acquire_owned()
            .map_err(|_| RequestError::TooManyConnections(self.limits.max_connections))?;
        let id = self.connections.allocate_id();
        let tracked = self
            .connections
            .open(id, transport, peer, limits::client_name(client_name));
        Ok(Session {
            core: self.clone(),
            tracked,
            quota: Arc::new(CreationQuota::new(
                self.limits.topics_created_per_connection,
            )),
            certificate,
            publish_streams: Arc::new(Semaphore::new(self.limits.max_publish_streams as usize)),
            _permit: permit,
        })
    }

    /// The principal of a data token ("" = none presented), with its
    /// permission checks.
    pub fn authenticate(&self, token: &str) -> Result<Guard, RequestError> {
        self.identify(None, token)
    }

    /// The principal a verified client certificate (DER) names, else the
    /// one of the token, with its permission checks.
    pub fn identify(&self, certificate: Option<&[u8]>, token: &str) -> Result<Guard, RequestError> {
        match self.directory.current().identify(certificate, token) {
            Ok(principal) => Ok(Guard::in_directory(
                principal,
                self.directory.clone(),
                self.denials.clone(),
            )),
            Err(AuthError::Missing) => Err(RequestError::Unauthenticated(
                "this server requires a token",
            )),
            Err(AuthError::Rejected) => Err(RequestError::Unauthenticated("token not accepted")),
        }
    }

    /// Connection slots still free (both edges).
    pub fn free_slots(&self) -> usize {
        self.gate.available_permits()
    }
}

/// One admitted connection, of either edge. Dropping it frees its slot and
/// its connection-table entry.
#[derive(Debug)]
pub struct Session {
    core: Arc<Core>,
    tracked: Tracked,
    quota: Arc<CreationQuota>,
    /// The verified client certificate (DER), if the client sent one.
    certificate: Option<Vec<u8>>,
    /// Publish streams open now (gRPC; QUIC's stream credit bounds its own).
    publish_streams: Arc<Semaphore>,
    _permit: OwnedSemaphorePermit,
}

/// A subscribe request, as both edges carry it.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeParams<'a> {
    /// The topic name, or a pattern.
    pub topic: &'a str,
    /// Where to start.
    pub start: StartAt,
    /// The wire value of the lag policy (checked here).
    pub lag_policy: i32,
    /// A wildcard subscription's per-topic resume positions.
    pub resume: &'a [v1::TopicPosition],
}

impl Session {
    /// The shared state.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The connection's id (QUIC `Welcome.connection_id`).
    pub fn id(&self) -> u64 {
        self.tracked.id()
    }

    /// A place for one more publish stream on this connection (held until
    /// dropped), or RESOURCE_EXHAUSTED naming the limit.
    pub fn publish_stream(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        self.publish_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Exhausted::PublishStreams {
                    limit: self.core.limits.max_publish_streams,
                }
                .into()
            })
    }

    /// The verified client certificate (DER) of this connection, if any.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificate.as_deref()
    }

    /// The connection-table entry (close requests, subscription ids).
    pub fn connection(&self) -> &Arc<Connection> {
        self.tracked.entry()
    }

    /// Cluster mode: before a subscribe to a backbone topic, makes the
    /// topic ready on this node (its stream looked up, or created within
    /// this connection's quota; the node following it); before a wildcard
    /// subscribe, every backbone topic it matches. Nothing to do for a
    /// local topic; [`Session::subscribe`] still checks everything.
    /// Bounded by [`PREPARE_TIMEOUT`], so a slow backbone cannot hold a
    /// QUIC control stream (and its pings) for long.
    pub async fn prepare_subscribe(
        &self,
        guard: &Guard,
        topic: &str,
        start: StartAt,
    ) -> Result<(), RequestError> {
        let Some(backbone) = &self.core.backbone else {
            return Ok(());
        };
        let Ok(pattern) = Pattern::parse(topic) else {
            return Ok(());
        };
        let literal = pattern.is_literal();
        if literal && !backbone.covers(topic) {
            return Ok(());
        }
        guard.check(Permission::Subscribe, topic)?;
        let limit = self.core.limits.max_topics_per_wildcard;
        let prepared = async {
            if literal {
                let t = backbone.prepare(topic, Some(&self.quota)).await?;
                backbone.refresh(&t, start).await
            } else {
                backbone.prepare_pattern(&pattern, limit).await
            }
        };
        match tokio::time::timeout(PREPARE_TIMEOUT, prepared).await {
            Ok(prepared) => prepared,
            Err(_) => Err(RequestError::Unavailable(format!(
                "the backbone did not answer within {} ms; retry",
                PREPARE_TIMEOUT.as_millis()
            ))),
        }
    }

    /// A subscription with id `id` for `guard`'s principal, `live` being
    /// how many this connection holds now. A resume is a subscribe, and is
    /// checked the same way.
    pub fn subscribe(
        &self,
        guard: &Guard,
        id: u64,
        params: SubscribeParams<'_>,
        live: usize,
    ) -> Result<Subscription, RequestError> {
        guard.check(Permission::Subscribe, params.topic)?;
        let max = self.core.limits.max_subscriptions;
        if live >= max as usize {
            return Err(RequestError::TooManySubscriptions(max));
        }
        let policy = LagPolicy::try_from(params.lag_policy).map_err(|_| {
            RequestError::Protocol(format!("unknown lag policy {}", params.lag_policy))
        })?;
        // `check` parsed it already.
        let pattern = Pattern::parse(params.topic)?;
        let (feed, metered) = if pattern.is_literal() {
            if !params.resume.is_empty() {
                return Err(RequestError::InvalidArgument(
                    "a resume list is for wildcard subscriptions; one topic resumes with start `after`"
                        .into(),
                ));
            }
            let topic = self
                .core
                .registry
                .get_or_create_within(params.topic, Some(&self.quota))?;
            let drain = Drain::new(topic, params.start, policy);
            let metered = Metered::drain(&drain);
            (Feed::Topic(drain), metered)
        } else {
            let resume = params
                .resume
                .iter()
                .map(|p| TopicPosition {
                    topic: p.topic.clone(),
                    epoch: p.epoch,
                    next: p.next_seq,
                })
                .collect();
            let wildcard = Wildcard::new(
                pattern,
                self.core.registry.clone(),
                params.start,
                resume,
                policy,
                self.core.limits.max_topics_per_wildcard,
            )?;
            (
                Feed::Pattern(wildcard),
                Metered::Pattern(params.topic.to_owned()),
            )
        };
        let meter = self.connection().add_subscription(id, metered);
        Ok(Subscription {
            id,
            feed,
            meter,
            permission: guard.clone(),
            directory: self.core.directory.clone(),
            seen_generation: self.core.directory.generation(),
            reloads: self.core.directory.watch(),
        })
    }

    /// A publisher for one stream of this connection, publishing as
    /// `guard`'s principal.
    pub fn publisher(&self, guard: Guard) -> TopicPublisher {
        TopicPublisher::new(
            self.core.registry.clone(),
            self.core.backbone.clone(),
            self.quota.clone(),
            guard,
        )
    }

    /// Answers one control request (QUIC control stream) without I/O;
    /// `live` is the connection's set of live subscriptions. The edge
    /// carries out the reply: starts or stops a subscription's task, then
    /// sends the response.
    pub fn control(
        &self,
        guard: &Guard,
        request: ControlRequest,
        live: &impl LiveSubscriptions,
    ) -> ControlReply {
        use control_request::Kind;
        let (response, action) = match request.kind {
            Some(Kind::Subscribe(s)) => {
                let id = s.subscription_id;
                let subscribed = if live.contains(id) {
                    Err(RequestError::InvalidSubscription(format!(
                        "subscription id {id} is already in use"
                    )))
                } else {
                    let params = SubscribeParams {
                        topic: &s.topic,
                        start: StartAt::from_proto(s.start.as_ref()),
                        lag_policy: s.lag_policy,
                        resume: &s.resume,
                    };
                    self.subscribe(guard, id, params, live.count())
                };
                match subscribed {
                    Ok(sub) => (
                        control_response::Kind::SubscribeOk(sub.ok()),
                        Some(Action::Start(Box::new(sub))),
                    ),
                    Err(e) => (control_response::Kind::Error(e.to_wire(id)), None),
                }
            }
            Some(Kind::Unsubscribe(u)) => {
                let id = u.subscription_id;
                if live.contains(id) {
                    (
                        control_response::Kind::Unsubscribed(v1::Unsubscribed {
                            subscription_id: id,
                        }),
                        Some(Action::Stop(id)),
                    )
                } else {
                    let e = RequestError::InvalidSubscription(format!(
                        "no live subscription with id {id}"
                    ));
                    (control_response::Kind::Error(e.to_wire(id)), None)
                }
            }
            Some(Kind::Ping(p)) => (
                control_response::Kind::Pong(v1::Pong { nonce: p.nonce }),
                None,
            ),
            Some(Kind::Hello(_)) => {
                let e = RequestError::Protocol("Hello was already received".into());
                (control_response::Kind::Error(e.to_wire(0)), None)
            }
            None => {
                let e = RequestError::Protocol("empty control request".into());
                (control_response::Kind::Error(e.to_wire(0)), None)
            }
        };
        ControlReply {
            response: ControlResponse {
                kind: Some(response),
            },
            action,
        }
    }
}

/// The live subscriptions of one connection, as [`Session::control`] needs
/// to see them.
pub trait LiveSubscriptions {
    /// Whether `id` is live.
    fn contains(&self, id: u64) -> bool;
    /// How many are live.
    fn count(&self) -> usize;
}

/// What the edge does for one control request.
#[derive(Debug)]
pub struct ControlReply {
    /// Sent on the control stream, after the action.
    pub response: ControlResponse,
    /// Start or stop a subscription.
    pub action: Option<Action>,
}

/// A change to the connection's live subscriptions.
#[derive(Debug)]
pub enum Action {
    /// Start serving this subscription.
    Start(Box<Subscription>),
    /// Stop subscription `id`.
    Stop(u64),
}

/// What a subscription reads from: one topic, or every topic a pattern
/// matches.
#[derive(Debug)]
enum Feed {
    Topic(Drain),
    Pattern(Wildcard),
}

/// One live subscription: its feed, its meter, and the permission it
/// was granted under.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    feed: Feed,
    meter: SubscriptionGuard,
    permission: Guard,
    directory: Arc<Directory>,
    /// The principals' generation this subscription was last checked in.
    seen_generation: u64,
    /// Wakes an idle subscription on a reload.
    reloads: tokio::sync::watch::Receiver<u64>,
}

impl Subscription {
    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The topic, or the pattern of a wildcard subscription.
    pub fn target(&self) -> &str {
        match &self.feed {
            Feed::Topic(d) => d.topic().name(),
            Feed::Pattern(w) => w.pattern().as_str(),
        }
    }

    /// Accounting so far (all topics together on a wildcard subscription).
    pub fn stats(&self) -> DrainStats {
        match &self.feed {
            Feed::Topic(d) => d.stats(),
            Feed::Pattern(w) => w.stats(),
        }
    }

    /// QUIC's `SubscribeOk` (gRPC carries the same in response metadata).
    /// A wildcard subscription has no one epoch or start: each topic's
    /// comes in its `Joined` event.
    pub fn ok(&self) -> v1::SubscribeOk {
        let (epoch, start_seq, topics) = match &self.feed {
            Feed::Topic(d) => (d.epoch(), d.start_seq(), 0),
            Feed::Pattern(w) => (0, 0, u32::try_from(w.topics()).unwrap_or(u32::MAX)),
        };
        v1::SubscribeOk {
            subscription_id: self.id,
            epoch,
            start_seq,
            topics,
        }
    }

    /// Reads one batch, emits its events in order, and records the batch
    /// once in the meter and the metrics.
    pub fn next_batch(&mut self, limits: BatchLimits, emit: impl FnMut(DeliveryRef<'_>)) -> Step {
        self.deliver(limits, &mut Events(emit))
    }

    /// [`Subscription::next_batch`] into a [`Deliver`] sink (one that
    /// sends frames gets messages encoded straight from the ring).
    pub fn deliver<D: Deliver + ?Sized>(&mut self, limits: BatchLimits, sink: &mut D) -> Step {
        let mut tallied = Tallied {
            sink,
            tally: BatchTally::default(),
        };
        let (step, stats, lag) = match &mut self.feed {
            Feed::Topic(d) => (d.deliver(limits, &mut tallied), d.stats(), 0),
            Feed::Pattern(w) => (w.deliver(limits, &mut tallied), w.stats(), w.lag()),
        };
        self.meter.meter().record(stats, lag, &tallied.tally, step);
        step
    }

    /// Waits until the next batch has something, or the principals were
    /// reloaded (then [`Subscription::revoked`] has something to say).
    /// Cancel-safe.
    pub async fn wait(&mut self) {
        let feed = async {
            match &mut self.feed {
                Feed::Topic(d) => d.wait().await,
                Feed::Pattern(w) => w.wait().await,
            }
        };
        tokio::select! {
            _ = feed => {}
            _ = self.reloads.changed() => {}
        }
    }

    /// After a reload of the principals, whether this subscription's
    /// permission was withdrawn: the PERMISSION_DENIED it ends with. One
    /// atomic load when nothing was reloaded; edges call it once per batch.
    pub fn revoked(&mut self) -> Option<RequestError> {
        let generation = self.directory.generation();
        if generation == self.seen_generation {
            return None;
        }
        self.seen_generation = generation;
        self.permission
            .check(Permission::Subscribe, self.target())
            .err()
    }

    /// Why the subscription ended on its own after `step`, as the error
    /// its client receives; `None` while it goes on.
    pub fn end(&self, step: Step) -> Option<RequestError> {
        match step {
            Step::Lagged { missed } => Some(RequestError::Lagged { missed }),
            Step::TopicDeleted => Some(RequestError::TopicDeleted(self.target().to_owned())),
            Step::TooManyTopics { limit } => Some(Exhausted::WildcardTopics { limit }.into()),
            Step::HistoryFailed => Some(RequestError::Unavailable(match &self.feed {
                Feed::Topic(d) => d
                    .failure()
                    .unwrap_or("the backbone replay failed")
                    .to_owned(),
                Feed::Pattern(_) => "the backbone replay failed".to_owned(),
            })),
            Step::Delivered { .. } | Step::Idle => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use lapwing_proto::v1::ErrorCode;
    use std::collections::HashMap;

    impl LiveSubscriptions for HashMap<u64, Subscription> {
        fn contains(&self, id: u64) -> bool {
            self.contains_key(&id)
        }
        fn count(&self) -> usize {
            self.len()
        }
    }

    /// A publish to a local topic (no backbone: it never waits).
    fn publish(
        publisher: &mut TopicPublisher,
        topic: &str,
        payload: &'static [u8],
    ) -> Result<v1::PublishAck, RequestError> {
        futures::executor::block_on(publisher.publish(topic, &bytes::Bytes::from_static(payload)))
    }

    fn core(tweak: impl FnOnce(&mut crate::Config)) -> Arc<Core> {
        let mut config = crate::Config::for_tests(std::path::Path::new("/tmp/unused"));
        tweak(&mut config);
        Core::new(
            Arc::new(Registry::from_config(&config).unwrap()),
            Limits::from_config(&config),
            Auth::new(&config.auth.tokens),
            Arc::new(Connections::new(Arc::new(Metrics::new()))),
            config.limits.partial_frame_bytes,
            CancellationToken::new(),
            None,
        )
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn subscribe(id: u64, topic: &str) -> ControlRequest {
        ControlRequest {
            kind: Some(control_request::Kind::Subscribe(v1::Subscribe {
                subscription_id: id,
                topic: topic.into(),
                ..Default::default()
            })),
        }
    }

    /// Runs the control protocol against a map of live subscriptions, as
    /// the QUIC edge does with its tasks; returns the response.
    fn send(
        session: &Session,
        live: &mut HashMap<u64, Subscription>,
        request: ControlRequest,
    ) -> control_response::Kind {
        let guard = session.core().authenticate("").unwrap();
        let reply = session.control(&guard, request, live);
        match reply.action {
            Some(Action::Start(sub)) => {
                live.insert(sub.id(), *sub);
            }
            Some(Action::Stop(id)) => {
                live.remove(&id);
            }
            None => {}
        }
        reply.response.kind.expect("a response")
    }

    fn error_code(kind: &control_response::Kind) -> ErrorCode {
        match kind {
            control_response::Kind::Error(e) => ErrorCode::try_from(e.code).unwrap(),
            other => panic!("expected an Error, got {other:?}"),
        }
    }

    #[test]
    fn one_gate_for_both_edges() {
        let core = core(|c| c.limits.max_connections = 2);
        let a = core.admit(Transport::Quic, peer(), "a").unwrap();
        let _b = core.admit(Transport::Grpc, peer(), "b").unwrap();
        let refused = core.admit(Transport::Quic, peer(), "c").unwrap_err();
        assert_eq!(refused.code(), ErrorCode::TooManyConnections);
        assert_eq!(core.connections.list().len(), 2);
        drop(a);
        assert_eq!(core.free_slots(), 1);
        core.admit(Transport::Grpc, peer(), "d")
            .expect("a slot was freed");
    }

    #[test]
    fn publish_streams_per_connection_are_capped() {
        let core = core(|c| c.limits.max_publish_streams_per_connection = 2);
        let s = core.admit(Transport::Grpc, peer(), "g").unwrap();
        let first = s.publish_stream().unwrap();
        let _second = s.publish_stream().unwrap();
        let refused = s.publish_stream().unwrap_err();
        assert_eq!(refused.code(), ErrorCode::ResourceExhausted);
        assert!(refused
            .to_string()
            .contains("max_publish_streams_per_connection"));
        drop(first);
        let _third = s.publish_stream().expect("a place was given back");
    }

    #[test]
    fn client_names_are_capped() {
        let core = core(|_| {});
        let s = core
            .admit(Transport::Quic, peer(), &"x".repeat(70_000))
            .unwrap();
        assert_eq!(
            s.connection().info().client_name.len(),
            limits::MAX_CLIENT_NAME_BYTES
        );
    }

    #[test]
    fn control_protocol_subscribe_unsubscribe_ping() {
        let core = core(|c| c.limits.max_subscriptions_per_connection = 2);
        let session = core.admit(Transport::Quic, peer(), "t").unwrap();
        let mut live = HashMap::new();
        let ok = match send(&session, &mut live, subscribe(1, "a")) {
            control_response::Kind::SubscribeOk(ok) => ok,
            other => panic!("{other:?}"),
        };
        assert_eq!((ok.subscription_id, ok.start_seq), (1, 0));
        assert_eq!(ok.epoch, core.registry.get("a").unwrap().epoch());
        let dup = send(&session, &mut live, subscribe(1, "b"));
        assert_eq!(error_code(&dup), ErrorCode::InvalidSubscription);
        let bad = send(&session, &mut live, subscribe(2, "bad..name"));
        assert_eq!(error_code(&bad), ErrorCode::InvalidTopic);
        assert!(matches!(
            send(&session, &mut live, subscribe(2, "b")),
            control_response::Kind::SubscribeOk(_)
        ));
        let over = send(&session, &mut live, subscribe(3, "c"));
        assert_eq!(error_code(&over), ErrorCode::TooManySubscriptions);
        assert_eq!(session.connection().subscription_count(), 2);
        let unsub = ControlRequest {
            kind: Some(control_request::Kind::Unsubscribe(v1::Unsubscribe {
                subscription_id: 1,
            })),
        };
        assert!(matches!(
            send(&session, &mut live, unsub.clone()),
            control_response::Kind::Unsubscribed(v1::Unsubscribed { subscription_id: 1 })
        ));
        assert_eq!(session.connection().subscription_count(), 1);
        let again = send(&session, &mut live, unsub);
        assert_eq!(error_code(&again), ErrorCode::InvalidSubscription);
        let ping = ControlRequest {
            kind: Some(control_request::Kind::Ping(v1::Ping { nonce: 7 })),
        };
        assert!(matches!(
            send(&session, &mut live, ping),
            control_response::Kind::Pong(v1::Pong { nonce: 7 })
        ));
        let hello = ControlRequest {
            kind: Some(control_request::Kind::Hello(v1::Hello::default())),
        };
        assert_eq!(
            error_code(&send(&session, &mut live, hello)),
            ErrorCode::Protocol
        );
        let empty = ControlRequest { kind: None };
        assert_eq!(
            error_code(&send(&session, &mut live, empty)),
            ErrorCode::Protocol
        );
    }

    #[test]
    fn unknown_lag_policy_and_topic_quota_are_typed() {
        let core = core(|c| c.limits.topics_created_per_connection = 1);
        let session = core.admit(Transport::Quic, peer(), "t").unwrap();
        let mut live = HashMap::new();
        let mut req = subscribe(1, "a");
        if let Some(control_request::Kind::Subscribe(s)) = &mut req.kind {
            s.lag_policy = 99;
        }
        assert_eq!(
            error_code(&send(&session, &mut live, req)),
            ErrorCode::Protocol
        );
        assert!(matches!(
            send(&session, &mut live, subscribe(1, "a")),
            control_response::Kind::SubscribeOk(_)
        ));
        let quota = send(&session, &mut live, subscribe(2, "b"));
        assert_eq!(error_code(&quota), ErrorCode::ResourceExhausted);
        let mut publisher = session.publisher(core.authenticate("").unwrap());
        let e = publish(&mut publisher, "c", b"x").unwrap_err();
        assert_eq!(e.code(), ErrorCode::ResourceExhausted);
        publish(&mut publisher, "a", b"x").expect("an existing topic");
    }

    #[test]
    fn a_batch_is_recorded_once_in_the_meter() {
        let core = core(|_| {});
        let session = core.admit(Transport::Quic, peer(), "t").unwrap();
        let params = SubscribeParams {
            topic: "a",
            start: StartAt::Latest,
            lag_policy: LagPolicy::ResumeOldest as i32,
            resume: &[],
        };
        let guard = core.authenticate("").unwrap();
        let mut sub = session.subscribe(&guard, 7, params, 0).unwrap();
        let mut publisher = session.publisher(guard);
        for _ in 0..3 {
            publish(&mut publisher, "a", b"m").unwrap();
        }
        let mut seen = 0;
        let step = sub.next_batch(BatchLimits::default(), |_| seen += 1);
        assert_eq!(
            step,
            Step::Delivered {
                messages: 3,
                resyncs: 0
            }
        );
        assert_eq!(seen, 3);
        let info = session.connection().info();
        assert_eq!(
            (info.subscriptions[0].id, info.subscriptions[0].delivered),
            (7, 3)
        );
    }
}
