//! Lapwing over gRPC: the server's `lapwing.v1.Bus` service through the
//! tonic client that `lapwing-proto` generates (lapwing-client speaks only
//! QUIC; its gRPC code is the admin CLI).
//!
//! Plaintext HTTP/2: the server's `tls.grpc = auto` serves TLS only on a
//! non-loopback listener, and `bench/run` binds 127.0.0.1 (and says `off`
//! outright). It is the same lapwing-server process as `lapwing-quic`, so
//! server CPU and RSS are read from the same pid; the systems run one after
//! the other, never at once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{
    delivery, Delivery, LagPolicy, PublishRequest, PublishStreamSummary, SubscribeRequest,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status, Streaming};

use super::{BoxFut, Event, Publisher, SideChannel, Subscription, System, SystemInfo, SystemKind};

/// Requests a publisher may queue ahead of the HTTP/2 stream; the same depth
/// as lapwing-client's publish queue, so both Lapwing adapters buffer alike.
const QUEUE: usize = 4096;

/// The metadata in which the server answers a Subscribe (QUIC's
/// `SubscribeOk`): present once the subscription exists.
const START_SEQ_KEY: &str = "lapwing-start-seq";

/// A running lapwing-server's gRPC edge.
#[derive(Debug, Clone)]
pub struct LapwingGrpc {
    /// gRPC `host:port` (plaintext).
    pub addr: String,
    /// Server pid: the same process as the QUIC edge.
    pub pid: Option<u32>,
}

impl LapwingGrpc {
    /// One new HTTP/2 connection: tonic multiplexes every call made through
    /// a `Channel` (and its clones) over one connection, so each subscriber
    /// connects on its own.
    async fn connect(&self) -> anyhow::Result<BusClient<Channel>> {
        let url = format!("http://{}", self.addr);
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad gRPC address `{}`", self.addr))?
            .user_agent("lapwing-bench")?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(BusClient::new(channel))
    }
}

impl System for LapwingGrpc {
    fn info(&self) -> SystemInfo {
        SystemInfo {
            id: SystemKind::LapwingGrpc.id().into(),
            transport: "gRPC over HTTP/2 (plaintext)".into(),
            tls: false,
            client: "tonic 0.14 with lapwing-proto's generated Bus client".into(),
        }
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFut<'a, anyhow::Result<Subscription>> {
        Box::pin(async move {
            let mut bus = self.connect().await?;
            // Resolves with the response headers, which the server sends
            // once the subscription is registered at the topic's head.
            let response = bus
                .subscribe(SubscribeRequest {
                    topic: topic.into(),
                    // Latest, as the QUIC adapter's default options.
                    start: None,
                    lag_policy: LagPolicy::ResumeOldest as i32,
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow::anyhow!("Subscribe refused: {}", describe(&s)))?;
            if response.metadata().get(START_SEQ_KEY).is_none() {
                bail!("Subscribe answered without `{START_SEQ_KEY}`: not confirmed");
            }
            let side = Arc::new(SideChannel::default());
            let state = Live {
                stream: response.into_inner(),
                _bus: bus,
                side: side.clone(),
            };
            let events = futures::stream::unfold(Some(state), |state| async move {
                let mut s = state?;
                let (event, keep) = s.next().await;
                Some((event, keep.then_some(s)))
            });
            Ok(Subscription {
                events: Box::pin(events),
                side,
            })
        })
    }

    fn publisher(&self) -> BoxFut<'_, anyhow::Result<Box<dyn Publisher>>> {
        Box::pin(async move {
            let bus = self.connect().await?;
            Ok(Box::new(GrpcPublisher { bus, call: None }) as Box<dyn Publisher>)
        })
    }

    fn server_pid(&self) -> Option<u32> {
        self.pid
    }
}

/// An open Subscribe call and the connection it rides on (dropped together,
/// which closes the connection).
struct Live {
    stream: Streaming<Delivery>,
    _bus: BusClient<Channel>,
    side: Arc<SideChannel>,
}

impl Live {
    /// The next event, and whether the stream goes on after it.
    async fn next(&mut self) -> (Event, bool) {
        match self.stream.message().await {
            Ok(Some(Delivery {
                kind: Some(delivery::Kind::Message(m)),
            })) => (Event::Message(m.payload), true),
            Ok(Some(Delivery {
                kind: Some(delivery::Kind::Resync(r)),
            })) => (Event::Resync { missed: r.missed }, true),
            Ok(Some(Delivery {
                kind: None | Some(delivery::Kind::Joined(_) | delivery::Kind::Left(_)),
            })) => (
                Event::Closed(
                    "server sent a Delivery with neither message nor resync (the bench subscribes to one topic)".into(),
                ),
                false,
            ),
            Ok(None) => (Event::Closed("subscription stream ended".into()), false),
            Err(status) => {
                // A status the server chose carries a Lapwing code; one
                // without it is the transport (or an operator's close).
                if status.metadata().get("lapwing-error-code").is_some() {
                    SideChannel::bump(&self.side.server_errors);
                } else {
                    SideChannel::bump(&self.side.disconnects);
                }
                (Event::Closed(describe(&status)), false)
            }
        }
    }
}

/// `CODE (lapwing code N): message`.
fn describe(s: &Status) -> String {
    let code = s
        .metadata()
        .get("lapwing-error-code")
        .and_then(|v| v.to_str().ok())
        .map_or(String::new(), |c| format!(" (lapwing code {c})"));
    format!("{:?}{code}: {}", s.code(), s.message())
}

/// Publishes on a long-lived `PublishStream` call, fire-and-forget: the
/// server applies the stream in order and answers only when it ends, so
/// `flush` ends the call and waits for that answer, and the next publish
/// opens a new one.
#[derive(Debug)]
struct GrpcPublisher {
    bus: BusClient<Channel>,
    call: Option<Call>,
}

/// One `PublishStream` call in flight.
#[derive(Debug)]
struct Call {
    tx: mpsc::Sender<PublishRequest>,
    /// The call itself runs as a task: tonic sends the request stream only
    /// while the call's future is polled.
    reply: JoinHandle<Result<Response<PublishStreamSummary>, Status>>,
    /// Messages handed to the stream.
    sent: u64,
}

impl Call {
    fn open(bus: &BusClient<Channel>) -> Call {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut bus = bus.clone();
        let reply = tokio::spawn(async move { bus.publish_stream(requests).await });
        Call { tx, reply, sent: 0 }
    }

    /// Ends the request stream and checks that the server published all of it.
    async fn finish(self) -> anyhow::Result<()> {
        let Call { tx, reply, sent } = self;
        drop(tx);
        let summary = reply
            .await
            .context("PublishStream task failed")?
            .map_err(|s| {
                let published = s
                    .metadata()
                    .get("lapwing-published")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                anyhow::anyhow!(
                    "PublishStream failed after {published} of {sent} messages: {}",
                    describe(&s)
                )
            })?
            .into_inner();
        if summary.published != sent {
            bail!(
                "PublishStream: the server published {} of {sent} messages",
                summary.published
            );
        }
        Ok(())
    }
}

impl Publisher for GrpcPublisher {
    fn publish_batch<'a>(
        &'a mut self,
        topic: &'a str,
        payloads: &'a [Bytes],
    ) -> BoxFut<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let call = self.call.get_or_insert_with(|| Call::open(&self.bus));
            let mut ended = false;
            for p in payloads {
                let request = PublishRequest {
                    topic: topic.to_owned(),
                    payload: p.clone(),
                };
                if call.tx.send(request).await.is_err() {
                    ended = true;
                    break;
                }
                call.sent += 1;
            }
            if ended {
                // The call ended early; its status says why.
                if let Some(call) = self.call.take() {
                    call.finish().await?;
                }
                bail!("PublishStream ended before the batch was sent");
            }
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFut<'_, anyhow::Result<()>> {
        Box::pin(async move {
            match self.call.take() {
                Some(call) => call.finish().await,
                None => Ok(()),
            }
        })
    }
}
