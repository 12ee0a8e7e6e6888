//! A raw QUIC client built from quinn and lapwing-proto only, for the
//! server's tests: it can send exactly the bytes a test wants, including
//! the wrong ones. Every wait is bounded by [`TIMEOUT`].
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use lapwing_proto::v1::{
    self, control_request, control_response, delivery, start_position, ControlRequest,
    ControlResponse, Delivery, ErrorCode,
};
use lapwing_proto::FrameCodec;
use lapwing_server::{Config, ServerHandle};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio_util::codec::FramedRead;

/// Bound on every single wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type Frames<M> = FramedRead<RecvStream, FrameCodec<M>>;

/// A subscription stream: its header (checked against the expected id),
/// then Delivery frames.
pub type Deliveries = FramedRead<RecvStream, SubscriptionCodec>;

#[derive(Debug)]
pub struct SubscriptionCodec {
    expect_id: u64,
    header_seen: bool,
    header: FrameCodec<v1::SubscriptionStreamHeader>,
    deliveries: FrameCodec<Delivery>,
}

impl SubscriptionCodec {
    pub fn new(expect_id: u64) -> Self {
        Self {
            expect_id,
            header_seen: false,
            header: FrameCodec::new(1 << 24),
            deliveries: FrameCodec::new(1 << 24),
        }
    }
}

impl tokio_util::codec::Decoder for SubscriptionCodec {
    type Item = Delivery;
    type Error = lapwing_proto::FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Delivery>, Self::Error> {
        if !self.header_seen {
            let Some(h) = self.header.decode(src)? else {
                return Ok(None);
            };
            if h.subscription_id != self.expect_id {
                return Err(lapwing_proto::FrameError::Malformed {
                    reason: format!(
                        "header for subscription {}, expected {}",
                        h.subscription_id, self.expect_id
                    ),
                });
            }
            self.header_seen = true;
        }
        self.deliveries.decode(src)
    }
}

/// Runs `fut` with [`TIMEOUT`], panicking with `what` if it takes longer.
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A server on loopback port 0 with a fresh data dir (kept alive by the
/// returned guard).
pub fn server(adjust: impl FnOnce(&mut Config)) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    adjust(&mut config);
    let handle = lapwing_server::spawn(config).expect("server starts");
    (handle, dir)
}

/// A client endpoint trusting `cert_pem` and offering `alpn`.
pub fn endpoint(cert_pem: &Path, alpn: &[u8]) -> Endpoint {
    endpoint_accepting(cert_pem, alpn, 1472)
}

/// [`endpoint`], accepting UDP payloads of up to `max_udp_payload` bytes
/// (quinn's default is 1472, Ethernet's).
pub fn endpoint_accepting(cert_pem: &Path, alpn: &[u8], max_udp_payload: u16) -> Endpoint {
    let pem = std::fs::read(cert_pem).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(1024));
    client.transport_config(Arc::new(transport));
    let mut config = quinn::EndpointConfig::default();
    config.max_udp_payload_size(max_udp_payload).unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut ep = Endpoint::new(config, None, socket, Arc::new(quinn::TokioRuntime)).unwrap();
    ep.set_default_client_config(client);
    ep
}

/// Connects with the right ALPN (handshake only, no Hello).
pub async fn connect(server: &ServerHandle) -> Connection {
    let ep = endpoint(server.cert_pem_path(), lapwing_proto::ALPN);
    bounded(
        "connect",
        ep.connect(server.quic_addr(), "localhost").unwrap(),
    )
    .await
    .expect("handshake")
}

/// A connected session: control stream open, Hello answered with Welcome.
pub struct Session {
    pub conn: Connection,
    pub ctl_send: SendStream,
    pub ctl: Frames<ControlResponse>,
    pub welcome: v1::Welcome,
}

pub fn encode<M: prost::Message>(msg: &M) -> Vec<u8> {
    let mut buf = BytesMut::new();
    lapwing_proto::encode_frame(msg, &mut buf);
    buf.to_vec()
}

pub fn hello(version: u32, token: &str) -> ControlRequest {
    ControlRequest {
        kind: Some(control_request::Kind::Hello(v1::Hello {
            version,
            token: token.into(),
            client_name: "raw-test".into(),
        })),
    }
}

/// Opens the control stream and sends `request` as its first frame.
pub async fn open_control(
    conn: &Connection,
    request: &ControlRequest,
) -> (SendStream, Frames<ControlResponse>) {
    let (mut send, recv) = bounded("open control", conn.open_bi()).await.unwrap();
    send.write_all(&encode(request)).await.unwrap();
    (send, FramedRead::new(recv, FrameCodec::new(1 << 24)))
}

/// Next control response (panics on end of stream or timeout).
pub async fn next_response(ctl: &mut Frames<ControlResponse>) -> control_response::Kind {
    bounded("control response", ctl.next())
        .await
        .expect("control stream ended")
        .expect("decodable control frame")
        .kind
        .expect("response has a kind")
}

/// Next control response that is an Error (skipping others, e.g. Pong).
pub async fn next_error(ctl: &mut Frames<ControlResponse>) -> v1::Error {
    loop {
        if let control_response::Kind::Error(e) = next_response(ctl).await {
            return e;
        }
    }
}

pub fn code_of(e: &v1::Error) -> ErrorCode {
    ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified)
}

/// Waits for the connection to be closed by the server; returns the
/// application close code.
pub async fn closed_code(conn: &Connection) -> Option<u64> {
    match bounded("connection close", conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        _ => None,
    }
}

impl Session {
    pub async fn open(server: &ServerHandle) -> Session {
        Self::open_with_token(server, "").await
    }

    pub async fn open_with_token(server: &ServerHandle, token: &str) -> Session {
        Self::open_on(connect(server).await, token).await
    }

    /// A session on a connection the caller made.
    pub async fn open_on(conn: Connection, token: &str) -> Session {
        let (ctl_send, mut ctl) =
            open_control(&conn, &hello(lapwing_proto::PROTOCOL_VERSION, token)).await;
        let welcome = match next_response(&mut ctl).await {
            control_response::Kind::Welcome(w) => w,
            other => panic!("expected Welcome, got {other:?}"),
        };
        Session {
            conn,
            ctl_send,
            ctl,
            welcome,
        }
    }

    pub async fn send(&mut self, kind: control_request::Kind) {
        let req = ControlRequest { kind: Some(kind) };
        self.ctl_send.write_all(&encode(&req)).await.unwrap();
    }

    /// Subscribes and returns (SubscribeOk, the subscription's delivery
    /// frames after its header). Only one subscription may be in flight.
    pub async fn subscribe(
        &mut self,
        id: u64,
        topic: &str,
        start: start_position::Kind,
        lag_policy: v1::LagPolicy,
    ) -> (v1::SubscribeOk, Deliveries) {
        self.send(control_request::Kind::Subscribe(v1::Subscribe {
            subscription_id: id,
            topic: topic.into(),
            start: Some(v1::StartPosition { kind: Some(start) }),
            lag_policy: lag_policy as i32,
            ..Default::default()
        }))
        .await;
        let ok = match next_response(&mut self.ctl).await {
            control_response::Kind::SubscribeOk(ok) => ok,
            other => panic!("expected SubscribeOk, got {other:?}"),
        };
        assert_eq!(ok.subscription_id, id);
        let recv = bounded("subscription stream", self.conn.accept_uni())
            .await
            .unwrap();
        (ok, FramedRead::new(recv, SubscriptionCodec::new(id)))
    }

    /// Opens a fire-and-forget publish stream.
    pub async fn publish_stream(&self) -> SendStream {
        bounded("open uni", self.conn.open_uni()).await.unwrap()
    }

    /// Ping round trip: proves the connection and its control stream work.
    pub async fn ping(&mut self, nonce: u64) {
        self.send(control_request::Kind::Ping(v1::Ping { nonce }))
            .await;
        loop {
            match next_response(&mut self.ctl).await {
                control_response::Kind::Pong(p) if p.nonce == nonce => return,
                control_response::Kind::Pong(_) | control_response::Kind::Error(_) => {}
                other => panic!("expected Pong, got {other:?}"),
            }
        }
    }
}

pub fn publish_frame(topic: &str, payload: &[u8]) -> Vec<u8> {
    encode(&v1::Publish {
        topic: topic.into(),
        payload: payload.to_vec().into(),
    })
}

/// Next delivery on a subscription stream.
pub async fn next_delivery(frames: &mut Deliveries) -> delivery::Kind {
    bounded("delivery", frames.next())
        .await
        .expect("subscription stream ended")
        .expect("decodable delivery")
        .kind
        .expect("delivery has a kind")
}

pub fn latest() -> start_position::Kind {
    start_position::Kind::Latest(start_position::Latest {})
}

pub fn oldest() -> start_position::Kind {
    start_position::Kind::Oldest(start_position::Oldest {})
}

/// Another client's subscription that must keep flowing whatever the test
/// does to the server: it publishes on its own connection and checks that
/// its subscriber receives every message with contiguous seqs.
pub struct Witness {
    publisher: Session,
    stream: SendStream,
    subscriber: Session,
    deliveries: Deliveries,
    next_seq: u64,
    topic: String,
}

impl Witness {
    pub async fn start(server: &ServerHandle, token: &str) -> Witness {
        let topic = "witness.flow".to_owned();
        let mut subscriber = Session::open_with_token(server, token).await;
        let (ok, deliveries) = subscriber
            .subscribe(1, &topic, latest(), v1::LagPolicy::ResumeOldest)
            .await;
        let publisher = Session::open_with_token(server, token).await;
        let stream = publisher.publish_stream().await;
        let mut w = Witness {
            publisher,
            stream,
            subscriber,
            deliveries,
            next_seq: ok.start_seq,
            topic,
        };
        w.check_flowing(3).await;
        w
    }

    /// Publishes `n` messages and checks they all arrive, in order, with
    /// seqs contiguous with everything this witness saw before.
    pub async fn check_flowing(&mut self, n: u64) {
        for i in 0..n {
            let payload = format!("w{}", self.next_seq + i);
            self.stream
                .write_all(&publish_frame(&self.topic, payload.as_bytes()))
                .await
                .unwrap();
        }
        for _ in 0..n {
            match next_delivery(&mut self.deliveries).await {
                delivery::Kind::Message(m) => {
                    assert_eq!(m.seq, self.next_seq, "witness seqs must be contiguous");
                    assert_eq!(m.payload, format!("w{}", m.seq).as_bytes());
                    assert!(m.publish_time_unix_nanos > 0);
                    self.next_seq += 1;
                }
                delivery::Kind::Resync(r) => panic!("witness got a resync: {r:?}"),
                delivery::Kind::Joined(j) => panic!("witness of one topic joined {j:?}"),
                delivery::Kind::Left(l) => panic!("witness of one topic left {l:?}"),
            }
        }
        // The publisher's connection is unaffected too.
        self.publisher.ping(self.next_seq).await;
    }
}
