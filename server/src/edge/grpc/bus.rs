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
    Delivery, PublishAck, PublishRequest, PublishStreamSummary, SubscribeRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::auth::bearer;
use super::io::session_of;
use super::{status, Shared};
use crate::drain::{BatchLimits, StartAt, Step};
use crate::error::RequestError;
use crate::permissions::Guard;
use crate::session::{Session, SubscribeParams, Subscription};

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

    /// The call's session and principal, once the connection is admitted,
    /// the token checked, and the server not shutting down.
    fn admit<T>(&self, request: &Request<T>) -> Result<(Arc<Session>, Guard), Status> {
        let session = session_of(request)?;
        let core = session.core();
        let token = bearer(request.metadata())?.unwrap_or("");
        let guard = core.identify(session.certificate(), token)?;
        if core.shutdown.is_cancelled() {
            return Err(status(&RequestError::ShuttingDown));
        }
        if let Some(agent) = request.metadata().get("user-agent") {
            session
                .connection()
                .set_client_name_if_empty(agent.to_str().unwrap_or(""));
        }
        Ok((session, guard))
    }
}

type DeliveryStream = Pin<Box<dyn Stream<Item = Result<Delivery, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Bus for BusService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishAck>, Status> {
        let (session, guard) = self.admit(&request)?;
        let p = request.into_inner();
        Ok(Response::new(
            session
                .publisher(guard)
                .publish(&p.topic, &p.payload)
                .await?,
        ))
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<PublishStreamSummary>, Status> {
        let (session, guard) = self.admit(&request)?;
        let _place = session.publish_stream()?;
        let mut stream = request.into_inner();
        let mut publisher = session.publisher(guard);
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
                _ = self.shared.core.shutdown.cancelled() => {
                    let s = status(&RequestError::ShuttingDown);
                    return Err(with_count(s, summary.published));
                }
            };
            match next {
                Ok(Some(p)) => match publisher.publish(&p.topic, &p.payload).await {
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
        let (session, guard) = self.admit(&request)?;
        let req = request.into_inner();
        let conn = session.connection();
        let params = SubscribeParams {
            topic: &req.topic,
            start: StartAt::from_proto(req.start.as_ref()),
            lag_policy: req.lag_policy,
            resume: &req.resume,
        };
        let id = conn.allocate_subscription_id();
        session
            .prepare_subscribe(&guard, &req.topic, StartAt::from_proto(req.start.as_ref()))
            .await?;
        let sub = session.subscribe(&guard, id, params, conn.subscription_count())?;
        let ok = sub.ok();
        debug!(topic = %req.topic, start_seq = ok.start_seq, subscription = id, "gRPC subscribe");
        let state = Sub {
            sub,
            queue: VecDeque::new(),
            end: None,
            shutdown: self.shared.core.shutdown.clone(),
            session,
        };
        let mut response = Response::new(Box::pin(state.into_stream()) as DeliveryStream);
        let md = response.metadata_mut();
        md.insert("lapwing-epoch", MetadataValue::from(ok.epoch));
        md.insert("lapwing-start-seq", MetadataValue::from(ok.start_seq));
        md.insert("lapwing-subscription-id", MetadataValue::from(id));
        Ok(response)
    }
}

/// One subscription's state between items.
struct Sub {
    sub: Subscription,
    /// The rest of the last batch read from the ring.
    queue: VecDeque<Delivery>,
    /// The status that ends the stream once `queue` is delivered.
    end: Option<Status>,
    shutdown: CancellationToken,
    /// Keeps the connection's slot and entry while the stream lives.
    session: Arc<Session>,
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
            return Some(status(&RequestError::ShuttingDown));
        }
        let conn = self.session.connection();
        conn.close_requested()
            .is_cancelled()
            .then(|| Status::unavailable(conn.close_reason()))
    }

    /// The next item; an error ends the stream.
    async fn next(&mut self) -> Result<Delivery, Status> {
        loop {
            if let Some(s) = self.interrupted() {
                return Err(s);
            }
            if let Some(e) = self.sub.revoked() {
                return Err(status(&e));
            }
            if let Some(d) = self.queue.pop_front() {
                return Ok(d);
            }
            if let Some(end) = self.end.take() {
                return Err(end);
            }
            let queue = &mut self.queue;
            let step = self
                .sub
                .next_batch(GRPC_BATCH, |d| queue.push_back(d.to_delivery()));
            match step {
                Step::Delivered { .. } => {}
                Step::Idle => self.idle().await,
                Step::Lagged { .. }
                | Step::TopicDeleted
                | Step::TooManyTopics { .. }
                | Step::HistoryFailed => self.end = self.sub.end(step).map(|e| status(&e)),
            }
        }
    }

    async fn idle(&mut self) {
        tokio::select! {
            _ = self.sub.wait() => {}
            _ = self.shutdown.cancelled() => {}
            _ = self.session.connection().close_requested().cancelled() => {}
        }
    }
}
