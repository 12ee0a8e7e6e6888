//! `lapwing.v1.Bus`: the data plane over gRPC.
//!
//! A Subscribe response is a pull-based stream over a
//! [`Drain`]: each time tonic asks for the next `Delivery` and the one
//! batch this subscription holds is used up, the next batch is read from
//! the ring. tonic asks only when HTTP/2 flow control has room, so a slow
//! reader simply stops the reads; the ring moves on without it and laps it,
//! and the next batch starts with a `Resync` that says exactly how many
//! messages it lost. Memory per subscription is bounded by one batch
//! ([`GRPC_BATCH`]) plus tonic's and HTTP/2's own buffers.
//!
//! The `SubscribeOk` of QUIC becomes the response's initial metadata:
//! `lapwing-epoch`, `lapwing-start-seq`, `lapwing-subscription-id`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use lapwing_proto::v1::bus_server::Bus;
use lapwing_proto::v1::{
    Delivery, ErrorCode, LagPolicy, PublishAck, PublishRequest, PublishStreamSummary,
    SubscribeRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::auth::check_data;
use super::io::conn_of;
use super::{status, Shared};
use crate::connections::{BatchTally, Connection, SubscriptionGuard};
use crate::limits::RequestError;
use crate::publisher::TopicPublisher;
use crate::subscription::{BatchLimits, Drain, StartAt, Step};

/// One batch per read of the ring. Smaller than the QUIC edge's: each
/// gRPC item is its own HTTP/2 message anyway, and this is what a
/// subscription may hold beyond what the transport buffers.
pub(crate) const GRPC_BATCH: BatchLimits = BatchLimits {
    max_messages: 64,
    max_bytes: 64 * 1024,
};

#[derive(Debug)]
pub(crate) struct BusService {
    shared: Arc<Shared>,
}

impl BusService {
    pub(crate) fn new(shared: Arc<Shared>) -> BusService {
        BusService { shared }
    }

    fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        check_data(&self.shared.auth, request.metadata())?;
        if self.shared.shutdown.is_cancelled() {
            return Err(status(ErrorCode::ShuttingDown, "server shutting down"));
        }
        if let (Some(conn), Some(agent)) = (conn_of(request), request.metadata().get("user-agent"))
        {
            conn.set_client_name_if_empty(agent.to_str().unwrap_or(""));
        }
        Ok(())
    }
}

type DeliveryStream = Pin<Box<dyn Stream<Item = Result<Delivery, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Bus for BusService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishAck>, Status> {
        self.admit(&request)?;
        let p = request.into_inner();
        let mut publisher = TopicPublisher::new(self.shared.registry.clone());
        Ok(Response::new(publisher.publish(&p.topic, &p.payload)?))
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<PublishStreamSummary>, Status> {
        self.admit(&request)?;
        let mut stream = request.into_inner();
        let mut publisher = TopicPublisher::new(self.shared.registry.clone());
        let mut summary = PublishStreamSummary::default();
        let with_count = |mut s: Status, published: u64| {
            // How far the stream got, for a client that wants to resend.
            s.metadata_mut()
                .insert("lapwing-published", MetadataValue::from(published));
            s
        };
        loop {
            let next = tokio::select! {
                next = stream.message() => next,
                _ = self.shared.shutdown.cancelled() => {
                    let s = status(ErrorCode::ShuttingDown, "server shutting down");
                    return Err(with_count(s, summary.published));
                }
            };
            match next {
                Ok(Some(p)) => match publisher.publish(&p.topic, &p.payload) {
                    Ok(ack) => {
                        summary.published += 1;
                        summary.last = Some(ack);
                    }
                    Err(e) => {
                        let s = Status::from(e);
                        let msg = format!(
                            "{} (after {} published on this stream)",
                            s.message(),
                            summary.published
                        );
                        let mut out = Status::with_metadata(s.code(), msg, s.metadata().clone());
                        out = with_count(out, summary.published);
                        return Err(out);
                    }
                },
                Ok(None) => return Ok(Response::new(summary)),
                Err(s) => return Err(with_count(s, summary.published)),
            }
        }
    }

    type SubscribeStream = DeliveryStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<DeliveryStream>, Status> {
        self.admit(&request)?;
        let conn = conn_of(&request);
        let req = request.into_inner();
        let policy = LagPolicy::try_from(req.lag_policy).map_err(|_| {
            RequestError::Protocol(format!("unknown lag policy {}", req.lag_policy))
        })?;
        let max = self.shared.limits.max_subscriptions;
        if conn
            .as_ref()
            .is_some_and(|c| c.subscription_count() >= max as usize)
        {
            return Err(RequestError::TooManySubscriptions(max).into());
        }
        let topic = self
            .shared
            .registry
            .get_or_create(&req.topic)
            .map_err(RequestError::from)?;
        let drain = Drain::new(topic, StartAt::from_proto(req.start.as_ref()), policy);
        let (epoch, start_seq) = (drain.epoch(), drain.start_seq());
        let (id, guard) = match &conn {
            Some(c) => {
                let id = c.allocate_subscription_id();
                (id, Some(c.add_subscription(id, &drain)))
            }
            None => (0, None),
        };
        debug!(topic = %req.topic, start_seq, subscription = id, "gRPC subscribe");
        let state = Sub {
            drain,
            queue: VecDeque::new(),
            end: None,
            guard,
            conn,
            shutdown: self.shared.shutdown.clone(),
        };
        let mut response = Response::new(Box::pin(state.into_stream()) as DeliveryStream);
        let md = response.metadata_mut();
        md.insert("lapwing-epoch", MetadataValue::from(epoch));
        md.insert("lapwing-start-seq", MetadataValue::from(start_seq));
        md.insert("lapwing-subscription-id", MetadataValue::from(id));
        Ok(response)
    }
}

/// One subscription's state between items.
struct Sub {
    drain: Drain,
    /// The rest of the last batch read from the ring.
    queue: VecDeque<Delivery>,
    /// The status that ends the stream once `queue` is delivered.
    end: Option<Status>,
    guard: Option<SubscriptionGuard>,
    conn: Option<Arc<Connection>>,
    shutdown: CancellationToken,
}

impl Sub {
    fn into_stream(self) -> impl Stream<Item = Result<Delivery, Status>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut s = state?;
            match s.next().await {
                Ok(d) => Some((Ok(d), Some(s))),
                Err(e) => Some((Err(e), None)),
            }
        })
    }

    fn interrupted(&self) -> Option<Status> {
        if self.shutdown.is_cancelled() {
            return Some(status(ErrorCode::ShuttingDown, "server shutting down"));
        }
        match &self.conn {
            Some(c) if c.close_requested().is_cancelled() => {
                Some(Status::unavailable(c.close_reason()))
            }
            _ => None,
        }
    }

    /// The next item; an error ends the stream.
    async fn next(&mut self) -> Result<Delivery, Status> {
        loop {
            if let Some(s) = self.interrupted() {
                return Err(s);
            }
            if let Some(d) = self.queue.pop_front() {
                return Ok(d);
            }
            if let Some(end) = self.end.take() {
                return Err(end);
            }
            let mut tally = BatchTally::default();
            let queue = &mut self.queue;
            let step = self.drain.next_batch(GRPC_BATCH, |d| {
                tally.see(&d);
                queue.push_back(d.to_delivery());
            });
            if let Some(g) = &self.guard {
                g.meter().record(&self.drain, &tally, step);
            }
            match step {
                Step::Delivered { .. } => {}
                Step::Idle => self.idle().await,
                Step::Lagged { missed } => {
                    self.end = Some(status(
                        ErrorCode::Lagged,
                        format!(
                            "subscription lagged ({missed} messages overwritten) and its lag policy is disconnect"
                        ),
                    ))
                }
                Step::TopicDeleted => {
                    self.end = Some(status(ErrorCode::TopicNotFound, "topic was deleted"))
                }
            }
        }
    }

    async fn idle(&self) {
        let closed = async {
            match &self.conn {
                Some(c) => c.close_requested().cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.drain.wait() => {}
            _ = self.shutdown.cancelled() => {}
            _ = closed => {}
        }
    }
}
