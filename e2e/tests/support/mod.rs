//! Helpers for the client-side end-to-end tests: an in-process server on
//! loopback and clients that trust its generated certificate.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use lapwing_client::{Client, ClientConfig, Event, Subscription, Trust};
use lapwing_server::{Config, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every await in these tests is bounded by this.
pub const STEP: Duration = Duration::from_secs(20);

/// A server on a fresh temporary data dir; `tweak` adjusts the test config.
pub fn server(tweak: impl FnOnce(&mut Config)) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = server_in(dir.path(), tweak);
    (srv, dir)
}

pub fn server_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut cfg = Config::for_tests(dir);
    tweak(&mut cfg);
    lapwing_server::spawn(cfg).expect("server starts")
}

/// Trusts the server's certificate file (the CA path, with name checks).
pub fn client_config(srv: &ServerHandle) -> ClientConfig {
    ClientConfig::new(
        srv.quic_addr().to_string(),
        Trust::CaFile(srv.cert_pem_path().to_owned()),
    )
}

pub async fn connect(srv: &ServerHandle) -> Client {
    bounded("connect", Client::connect(client_config(srv)))
        .await
        .expect("client connects")
}

pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// Polls `probe` (a look at server state) every 10 ms until it answers,
/// for at most [`STEP`].
pub async fn until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    bounded(what, async {
        loop {
            if let Some(v) = probe() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A plaintext gRPC channel to the server's loopback listener.
pub async fn channel(srv: &ServerHandle) -> tonic::transport::Channel {
    let url = format!("http://{}", srv.grpc_addr());
    bounded(
        "gRPC connect",
        tonic::transport::Channel::from_shared(url)
            .unwrap()
            .connect(),
    )
    .await
    .expect("gRPC channel")
}

/// `msg` with `authorization: Bearer <token>`.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// The next event, which must arrive within [`STEP`].
pub async fn next_event(sub: &mut Subscription) -> Event {
    bounded("next event", sub.next())
        .await
        .expect("subscription still open")
        .expect("no subscription error")
}

/// A subscriber's view, checked event by event against the delivery
/// contract: each event continues exactly where the previous one ended.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub epoch: Option<u64>,
    pub start: Option<u64>,
    pub next: Option<u64>,
    pub delivered: u64,
    pub missed: u64,
    pub resyncs: Vec<Event>,
    pub seqs: Vec<u64>,
}

impl Ledger {
    pub fn starting_at(epoch: u64, seq: u64) -> Self {
        Ledger {
            epoch: Some(epoch),
            start: Some(seq),
            next: Some(seq),
            ..Ledger::default()
        }
    }

    /// Records `event`, panicking on any gap, duplicate or reordering.
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::Message { epoch, seq, .. } => {
                if let Some(next) = self.next {
                    assert_eq!(
                        *seq,
                        next,
                        "message out of order (after {:?})",
                        self.seqs.last()
                    );
                    assert_eq!(Some(*epoch), self.epoch, "epoch changed without a resync");
                } else {
                    self.start = Some(*seq);
                    self.epoch = Some(*epoch);
                }
                self.delivered += 1;
                self.seqs.push(*seq);
                self.next = Some(seq + 1);
            }
            Event::Resync {
                missed,
                resume_seq,
                epoch,
                reason,
                ..
            } => {
                if *reason == lapwing_client::ResyncReason::EpochChanged {
                    assert_eq!(resume_seq, missed, "epoch change restarts the count at 0");
                    self.epoch = Some(*epoch);
                    self.start = Some(0);
                    self.delivered = 0;
                    self.missed = *missed;
                    self.seqs.clear();
                } else {
                    let next = self.next.expect("resync before any position");
                    assert_eq!(Some(*epoch), self.epoch, "resync in another epoch");
                    assert_eq!(*resume_seq, next + missed, "resync does not add up");
                    self.missed += missed;
                }
                self.next = Some(*resume_seq);
                self.resyncs.push(event.clone());
            }
            Event::Joined {
                epoch, start_seq, ..
            } => {
                if self.next.is_some() && self.epoch == Some(*epoch) {
                    // Resumed after a reconnect: exactly where it stopped.
                    assert_eq!(
                        Some(*start_seq),
                        self.next,
                        "resumed with a gap or a repeat"
                    );
                } else {
                    // A topic joined (again, in a new epoch): its
                    // accounting starts here.
                    *self = Ledger::starting_at(*epoch, *start_seq);
                }
            }
            // The topic was deleted: nothing more of this epoch.
            Event::Left { .. } => *self = Ledger::default(),
        }
    }

    /// `delivered + missed == published in the window`.
    pub fn window(&self) -> u64 {
        self.next.unwrap_or(0) - self.start.unwrap_or(0)
    }

    pub fn assert_accounting(&self) {
        assert_eq!(
            self.delivered + self.missed,
            self.window(),
            "accounting invariant: delivered {} + missed {} != window {}",
            self.delivered,
            self.missed,
            self.window()
        );
        assert!(
            self.seqs.windows(2).all(|w| w[0] < w[1]),
            "seqs not strictly increasing"
        );
    }

    /// Reads `sub` until the ledger has covered seq `last` (inclusive).
    pub async fn follow_until(&mut self, sub: &mut Subscription, last: u64) {
        while self.next.is_none_or(|n| n <= last) {
            let event = next_event(sub).await;
            self.record(&event);
        }
    }
}

/// A plain HTTP/1.0 GET: (status code, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    bounded("HTTP GET", async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let status = buf[9..12].parse().unwrap();
        let body = buf.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    })
    .await
}
