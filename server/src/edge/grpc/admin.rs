//! `lapwing.v1.Admin`: topics, connections, server info and live stats for
//! operators. Every call is checked against the admin token first
//! ([`super::AdminAuth`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use lapwing_proto::v1::admin_server::Admin;
use lapwing_proto::v1::{
    CheckPermissionRequest, CheckPermissionResponse, CloseConnectionRequest,
    CloseConnectionResponse, CreateTopicRequest, DeleteTopicRequest, DeleteTopicResponse,
    GetTopicRequest, ListConnectionsRequest, ListConnectionsResponse, ListTopicsRequest,
    ListTopicsResponse, ReloadPrincipalsRequest, ReloadPrincipalsResponse, ServerInfoRequest,
    ServerInfoResponse, StatsSnapshot, TopicInfo, WatchStatsRequest,
};
use tonic::{Request, Response, Status};
use tracing::info;

use super::io::session_of;
use super::Shared;
use crate::error::RequestError;
use crate::permissions::Action;
use crate::topic::{now_unix_nanos, Topic, TopicSettings};
use lapwing_proto::pattern::Pattern;

/// Shortest `WatchStats` interval.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// How often the publish rate is re-sampled (its window).
const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct AdminService {
    shared: Arc<Shared>,
    rates: Arc<Rates>,
}

impl AdminService {
    pub(crate) fn new(shared: Arc<Shared>) -> AdminService {
        AdminService {
            shared,
            rates: Arc::default(),
        }
    }

    /// An admitted connection (the gate counts Admin clients too) and the
    /// admin token.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        session_of(request)?;
        self.shared.admin.check(
            &self.shared.core.directory.current(),
            &self.shared.core.denials,
            request.metadata(),
        )
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, Status> {
        self.shared
            .core
            .registry
            .get(name)
            .ok_or_else(|| RequestError::TopicNotFound(name.to_owned()).into())
    }
}

/// Publish rates: per topic, the count at the last two samples taken at
/// least [`RATE_WINDOW`] apart, so the rate is over about a second however
/// often (or by how many callers) it is read.
#[derive(Debug, Default)]
struct Rates {
    samples: Mutex<HashMap<String, RateSample>>,
}

#[derive(Debug, Clone, Copy)]
struct RateSample {
    epoch: u64,
    prev: (Instant, u64),
    last: (Instant, u64),
}

impl Rates {
    fn rate(&self, topic: &Topic, published: u64) -> f64 {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let s = samples
            .entry(topic.name().to_owned())
            .or_insert(RateSample {
                epoch: topic.epoch(),
                prev: (now, published),
                last: (now, published),
            });
        if s.epoch != topic.epoch() {
            *s = RateSample {
                epoch: topic.epoch(),
                prev: (now, published),
                last: (now, published),
            };
        }
        if now.duration_since(s.last.0) >= RATE_WINDOW {
            s.prev = s.last;
            s.last = (now, published);
        }
        let secs = s.last.0.duration_since(s.prev.0).as_secs_f64();
        if secs > 0.0 {
            s.last.1.saturating_sub(s.prev.1) as f64 / secs
        } else {
            0.0
        }
    }

    fn forget(&self, name: &str) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

fn topic_info(topic: &Topic, rates: &Rates) -> TopicInfo {
    let s = topic.stats();
    TopicInfo {
        publish_rate: rates.rate(topic, s.published),
        name: s.name,
        epoch: s.epoch,
        head_seq: s.head,
        oldest_retained_seq: s.oldest_retained,
        ring_bytes: s.ring_bytes as u64,
        max_message_bytes: s.max_message_bytes as u64,
        published_messages: s.published,
        published_bytes: s.bytes,
        subscribers: u32::try_from(s.subscribers).unwrap_or(u32::MAX),
        resyncs_sent: s.resyncs_sent,
        messages_missed: s.messages_missed,
        created_unix_nanos: topic.created_unix_nanos(),
    }
}

fn all_topics(shared: &Shared, rates: &Rates) -> Vec<TopicInfo> {
    let registry = &shared.core.registry;
    registry
        .list()
        .iter()
        .filter_map(|n| registry.get(n))
        .map(|t| topic_info(&t, rates))
        .collect()
}

fn snapshot(shared: &Shared, rates: &Rates, include_topics: bool) -> StatsSnapshot {
    let totals = shared.metrics.totals(&shared.core.registry);
    let counts = shared.core.connections.counts();
    let sum = |f: fn(&(u64, u64)) -> u64| {
        u32::try_from(counts.iter().map(f).sum::<u64>()).unwrap_or(u32::MAX)
    };
    StatsSnapshot {
        unix_nanos: now_unix_nanos(),
        connections: sum(|c| c.0),
        subscriptions: sum(|c| c.1),
        topics: u32::try_from(shared.core.registry.len()).unwrap_or(u32::MAX),
        published_messages: totals.published,
        delivered_messages: totals.delivered,
        resyncs_sent: totals.resyncs,
        messages_missed: totals.missed,
        topic_stats: if include_topics {
            all_topics(shared, rates)
        } else {
            Vec::new()
        },
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<StatsSnapshot, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<TopicInfo>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let registry = &self.shared.core.registry;
        let defaults = registry.settings_for(&r.name);
        let pick = |v: u64, default: usize| {
            if v == 0 {
                Ok::<usize, Status>(default)
            } else {
                usize::try_from(v)
                    .map_err(|_| RequestError::InvalidArgument(format!("{v} is too large")).into())
            }
        };
        let settings = TopicSettings {
            ring_bytes: pick(r.ring_bytes, defaults.ring_bytes)?,
            max_message_bytes: pick(r.max_message_bytes, defaults.max_message_bytes)?,
        };
        let topic = registry
            .create(&r.name, settings)
            .map_err(RequestError::from)?;
        info!(topic = %r.name, ring_bytes = settings.ring_bytes,
            max_message_bytes = settings.max_message_bytes, "topic created (admin)");
        Ok(Response::new(topic_info(&topic, &self.rates)))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        self.authorize(&request)?;
        let name = request.into_inner().name;
        let topic = self.topic(&name)?;
        self.shared
            .core
            .registry
            .delete(&name)
            .map_err(RequestError::from)?;
        // Publishes stop at the deletion mark; count what it had.
        self.shared.metrics.retire_topic(&topic.stats());
        self.rates.forget(&name);
        info!(topic = %name, "topic deleted (admin)");
        Ok(Response::new(DeleteTopicResponse { deleted: true }))
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        self.authorize(&request)?;
        Ok(Response::new(ListTopicsResponse {
            topics: all_topics(&self.shared, &self.rates),
        }))
    }

    async fn get_topic(
        &self,
        request: Request<GetTopicRequest>,
    ) -> Result<Response<TopicInfo>, Status> {
        self.authorize(&request)?;
        let topic = self.topic(&request.get_ref().name)?;
        Ok(Response::new(topic_info(&topic, &self.rates)))
    }

    async fn list_connections(
        &self,
        request: Request<ListConnectionsRequest>,
    ) -> Result<Response<ListConnectionsResponse>, Status> {
        self.authorize(&request)?;
        let connections = self
            .shared
            .core
            .connections
            .list()
            .iter()
            .map(|c| c.info())
            .collect();
        Ok(Response::new(ListConnectionsResponse { connections }))
    }

    async fn close_connection(
        &self,
        request: Request<CloseConnectionRequest>,
    ) -> Result<Response<CloseConnectionResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let closed = self.shared.core.connections.close(r.id, &r.reason);
        if closed {
            info!(connection = r.id, reason = %r.reason, "connection closed (admin)");
        }
        Ok(Response::new(CloseConnectionResponse { closed }))
    }

    async fn server_info(
        &self,
        request: Request<ServerInfoRequest>,
    ) -> Result<Response<ServerInfoResponse>, Status> {
        self.authorize(&request)?;
        let f = &self.shared.facts;
        let l = &self.shared.core.limits;
        Ok(Response::new(ServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: f.started.elapsed().as_secs(),
            quic_listen: f.quic_listen.to_string(),
            grpc_listen: f.grpc_listen.to_string(),
            http_listen: f.http_listen.to_string(),
            max_message_bytes: l.max_message_bytes as u64,
            max_connections: u32::try_from(l.max_connections).unwrap_or(u32::MAX),
            max_subscriptions_per_connection: l.max_subscriptions,
            default_ring_bytes: f.default_ring_bytes as u64,
            cert_fingerprint_sha256: f.fingerprint.clone(),
            grpc_tls: f.grpc_tls,
            server_name: f.server_name.clone(),
            admin_token_required: self.shared.admin.token_required(),
            data_token_required: self.shared.core.directory.current().required(),
        }))
    }

    type WatchStatsStream = StatsStream;

    async fn watch_stats(
        &self,
        request: Request<WatchStatsRequest>,
    ) -> Result<Response<StatsStream>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let interval = match r.interval_ms {
            0 => Duration::from_millis(1000),
            ms => Duration::from_millis(u64::from(ms)).max(MIN_WATCH_INTERVAL),
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        let rates = self.rates.clone();
        let include = r.include_topics;
        let stream = futures::stream::unfold(
            (ticker, shared, rates),
            move |(mut ticker, shared, rates)| async move {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = shared.core.shutdown.cancelled() => return None,
                }
                let snap = snapshot(&shared, &rates, include);
                Some((Ok(snap), (ticker, shared, rates)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
    async fn check_permission(
        &self,
        request: Request<CheckPermissionRequest>,
    ) -> Result<Response<CheckPermissionResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let action = match r.action.as_str() {
            "publish" => Action::Publish,
            "subscribe" => Action::Subscribe,
            other => {
                return Err(RequestError::InvalidArgument(format!(
                    "action `{other}` is neither `publish` nor `subscribe`"
                ))
                .into())
            }
        };
        let target =
            Pattern::parse(&r.topic).map_err(|e| RequestError::InvalidArgument(e.to_string()))?;
        let principal = self
            .shared
            .core
            .directory
            .current()
            .principal(&r.principal)
            .ok_or_else(|| {
                RequestError::InvalidArgument(format!("no principal named `{}`", r.principal))
            })?;
        Ok(Response::new(CheckPermissionResponse {
            allowed: principal.rules(action).decide(&target).is_ok(),
            explanation: principal.explain(action, &target),
        }))
    }

    async fn reload_principals(
        &self,
        request: Request<ReloadPrincipalsRequest>,
    ) -> Result<Response<ReloadPrincipalsResponse>, Status> {
        self.authorize(&request)?;
        let count = self
            .shared
            .reloader
            .reload()
            .map_err(|e| RequestError::InvalidArgument(e.to_string()))?;
        Ok(Response::new(ReloadPrincipalsResponse {
            principals: u32::try_from(count).unwrap_or(u32::MAX),
        }))
    }
}
