//! Helpers of the abuse suite: the server as a separate process (so its
//! RSS is its own), a canary that must keep flowing whatever the attacker
//! does, and the typed-error checks shared by the attacks.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapwing_client::{Client, ClientConfig, Event, Start, SubscribeOptions, Trust};
use lapwing_proto::v1::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every single wait of the suite is bounded by this.
pub const STEP: Duration = Duration::from_secs(15);

pub const MIB: u64 = 1024 * 1024;

/// The gRPC metadata key carrying the Lapwing error code.
pub const ERROR_CODE_KEY: &str = "lapwing-error-code";

/// Set to run the suite against a server from before issue 11 (to
/// reproduce the "before" numbers): the config keys that server does not
/// know are left out of the config file instead of failing its start.
pub const PRE_FIX_ENV: &str = "LAPWING_ABUSE_PRE_FIX";

/// Set to a `lapwing-server` binary to attack that one instead of the one
/// next to the test executable (e.g. one built from an older commit).
pub const SERVER_BIN_ENV: &str = "LAPWING_ABUSE_SERVER_BIN";

/// The topic of the [`Canary`]; it has its own small ring (a `[[topics]]`
/// entry) so it takes 64 KiB of any ring budget.
pub const CANARY_TOPIC: &str = "canary.flow";
pub const CANARY_RING_BYTES: u64 = 64 * 1024;

/// Runs `fut` with [`STEP`], panicking with `what` if it takes longer.
pub async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?}: {what}"))
}

/// What a test's server runs with: keys of the TOML config file and
/// environment variables.
#[derive(Debug, Default, Clone)]
pub struct Spec {
    limits: Vec<(&'static str, String)>,
    new_limits: Vec<(&'static str, String)>,
    topic_defaults: Vec<(&'static str, String)>,
    auth: Vec<(&'static str, String)>,
    env: Vec<(&'static str, String)>,
}

impl Spec {
    pub fn new() -> Spec {
        Spec::default()
    }

    /// A `[limits]` key the server had before issue 11.
    pub fn limit(mut self, key: &'static str, value: impl ToString) -> Spec {
        self.limits.push((key, value.to_string()));
        self
    }

    /// A `[limits]` key issue 11 adds (left out under [`PRE_FIX_ENV`]).
    pub fn new_limit(mut self, key: &'static str, value: impl ToString) -> Spec {
        self.new_limits.push((key, value.to_string()));
        self
    }

    pub fn ring_bytes(mut self, bytes: u64) -> Spec {
        self.topic_defaults.push(("ring_bytes", bytes.to_string()));
        self
    }

    /// Data tokens (`auth.tokens`).
    pub fn tokens(mut self, tokens: &[&str]) -> Spec {
        let list: Vec<String> = tokens.iter().map(|t| format!("{t:?}")).collect();
        self.auth.push(("tokens", format!("[{}]", list.join(", "))));
        self
    }

    pub fn env(mut self, var: &'static str, value: impl ToString) -> Spec {
        self.env.push((var, value.to_string()));
        self
    }

    fn toml(&self, data_dir: &std::path::Path, quic: Option<SocketAddr>) -> String {
        let pre_fix = std::env::var_os(PRE_FIX_ENV).is_some();
        let mut t = String::new();
        t.push_str(&format!(
            "data_dir = {:?}\nlog_format = \"json\"\n",
            data_dir
        ));
        let quic = quic.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        t.push_str(&format!(
            "[listen]\nquic = \"{quic}\"\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n",
        ));
        let section =
            |t: &mut String, name: &str, keys: &mut dyn Iterator<Item = &(&str, String)>| {
                t.push_str(&format!("[{name}]\n"));
                for (k, v) in keys {
                    t.push_str(&format!("{k} = {v}\n"));
                }
            };
        let mut limits = self
            .limits
            .iter()
            .chain(self.new_limits.iter().filter(|_| !pre_fix));
        section(&mut t, "limits", &mut limits);
        section(&mut t, "topic_defaults", &mut self.topic_defaults.iter());
        section(&mut t, "auth", &mut self.auth.iter());
        t.push_str(&format!(
            "[[topics]]\nname = {CANARY_TOPIC:?}\nring_bytes = {CANARY_RING_BYTES}\nmax_message_bytes = 1024\n"
        ));
        t
    }
}

/// The `lapwing-server` binary next to the test executable
/// (`target/debug/deps/abuse-*` -> `target/debug/lapwing-server`).
fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(SERVER_BIN_ENV) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let debug = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = debug.join(format!("lapwing-server{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: the abuse suite runs the server as its own process; \
         build it first (`cargo build -p lapwing-server`, or `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// A `lapwing-server` process on loopback ports chosen by the OS, killed
/// when dropped.
pub struct ServerProcess {
    child: Child,
    pub quic: SocketAddr,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub cert: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// Lines of the server's log kept for failure messages.
const LOG_KEEP: usize = 20_000;

impl ServerProcess {
    pub fn start(spec: &Spec) -> ServerProcess {
        ServerProcess::start_in(spec, tempfile::tempdir().expect("tempdir"), None)
    }

    /// SIGKILLs the server (no GoAway, no flush: the process just ends)
    /// and starts a new one on the same data directory (so the same
    /// certificate) and QUIC port, as a supervisor restarting a crashed
    /// server would. The other listeners get new ports.
    pub fn kill_and_restart(self, spec: &Spec) -> ServerProcess {
        let quic = self.quic;
        let dir = self.kill();
        ServerProcess::start_in(spec, dir, Some(quic))
    }

    /// SIGKILLs the server and waits for it to be gone; returns its data
    /// directory.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self._dir, dir)
    }

    /// The process id (for `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open file descriptors of the server process.
    pub fn open_fds(&self) -> usize {
        let path = format!("/proc/{}/fd", self.child.id());
        std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("server process gone? {path}: {e}"))
            .count()
    }

    fn start_in(spec: &Spec, dir: tempfile::TempDir, quic: Option<SocketAddr>) -> ServerProcess {
        let config = dir.path().join("lapwing.toml");
        let toml = spec.toml(dir.path(), quic);
        std::fs::write(&config, &toml).expect("write config");
        let mut cmd = Command::new(server_binary());
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (var, _) in std::env::vars() {
            if var.starts_with("LAPWING_") {
                cmd.env_remove(var);
            }
        }
        for (var, value) in &spec.env {
            cmd.env(var, value);
        }
        let mut child = cmd.spawn().expect("spawn lapwing-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let out_log = log.clone();
        // Drains stdout for the server's whole life: a full pipe would
        // block its logging, and with it the server.
        std::thread::spawn(move || {
            let mut cert = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let f = &v["fields"];
                    if let Some(c) = f["cert"].as_str() {
                        cert = Some(PathBuf::from(c));
                    }
                    if f["message"] == "lapwing server listening" {
                        let addr = |k: &str| f[k].as_str().and_then(|s| s.parse().ok());
                        let _ =
                            ready_tx.send((addr("quic"), addr("grpc"), addr("http"), cert.clone()));
                    }
                }
                let mut l = out_log.lock().expect("log lock");
                if l.len() < LOG_KEEP {
                    l.push(line);
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr piped");
        let (err_tx, err_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            let _ = err_tx.send(s);
        });
        let ready = ready_rx.recv_timeout(STEP);
        match ready {
            Ok((Some(quic), Some(grpc), Some(http), Some(cert))) => ServerProcess {
                child,
                quic,
                grpc,
                http,
                cert,
                log,
                _dir: dir,
            },
            other => {
                let _ = child.kill();
                let status = child.wait();
                let stderr = err_rx
                    .recv_timeout(Duration::from_secs(2))
                    .unwrap_or_default();
                panic!(
                    "lapwing-server did not report its addresses ({other:?}); exit {status:?}\n\
                     config:\n{toml}\nstderr:\n{stderr}\nlog:\n{}",
                    log.lock().expect("log lock").join("\n")
                );
            }
        }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("server process gone? {path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    }

    /// Resident set size now (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// Peak resident set size so far (VmHWM): an attack that holds memory
    /// only for a moment still shows.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The first log line containing `needle`, if any.
    pub fn log_line(&self, needle: &str) -> Option<String> {
        let log = self.log.lock().expect("log lock");
        log.iter().find(|l| l.contains(needle)).cloned()
    }

    /// The server's `/metrics` text (plain HTTP/1.1 on loopback).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = bounded("metrics connect", tokio::net::TcpStream::connect(self.http))
            .await
            .expect("metrics connect");
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        );
        tcp.write_all(req.as_bytes())
            .await
            .expect("metrics request");
        let mut body = String::new();
        bounded("metrics read", tcp.read_to_string(&mut body))
            .await
            .expect("metrics read");
        body
    }

    /// A canary client config (trusts the generated certificate).
    pub fn client_config(&self, name: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new(self.quic.to_string(), Trust::CaFile(self.cert.clone()));
        cfg.client_name = name.to_owned();
        cfg
    }

    pub async fn client(&self, name: &str, token: Option<&str>) -> Client {
        let mut cfg = self.client_config(name);
        cfg.token = token.map(str::to_owned);
        bounded("client connect", Client::connect(cfg))
            .await
            .expect("client connects")
    }

    /// A gRPC channel (plaintext: the listener is on loopback).
    pub async fn channel(&self) -> tonic::transport::Channel {
        let url = format!("http://{}", self.grpc);
        bounded(
            "gRPC connect",
            tonic::transport::Channel::from_shared(url)
                .expect("url")
                .connect(),
        )
        .await
        .expect("gRPC channel")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RSS growth of a server during an attack, and the bound it must meet.
#[must_use = "call assert() once the other checks are done"]
#[derive(Debug)]
pub struct RssCheck {
    attack: String,
    growth: u64,
    bound: u64,
}

impl RssCheck {
    /// Measures the peak growth of `server` over `baseline` now and prints
    /// it (the numbers in the report come from here).
    pub fn measure(server: &ServerProcess, attack: &str, baseline: u64, bound: u64) -> RssCheck {
        let peak = server.peak_rss_bytes();
        let now = server.rss_bytes();
        let growth = peak.saturating_sub(baseline);
        eprintln!(
            "[abuse] {attack}: server RSS baseline {} MiB, peak {} MiB (+{:.1} MiB), now {} MiB; bound +{} MiB",
            baseline / MIB,
            peak / MIB,
            growth as f64 / MIB as f64,
            now / MIB,
            bound / MIB
        );
        RssCheck {
            attack: attack.to_owned(),
            growth,
            bound,
        }
    }

    /// Panics when the peak went over the bound.
    pub fn assert(self) {
        assert!(
            self.growth <= self.bound,
            "{}: server RSS grew by {:.1} MiB, over the bound of {} MiB",
            self.attack,
            self.growth as f64 / MIB as f64,
            self.bound / MIB
        );
    }
}

/// What the canary saw.
#[derive(Debug)]
pub struct CanaryReport {
    pub delivered: u64,
    pub max_stall: Duration,
}

/// A canary: one client publishes a counter on [`CANARY_TOPIC`] every few
/// ms (acked), another subscribes; every seq must arrive, contiguous, with
/// no Resync, while the attack runs.
pub struct Canary {
    stop: CancellationToken,
    publisher: JoinHandle<Result<Option<u64>, String>>,
    subscriber: JoinHandle<Result<CanaryReport, String>>,
    delivered: Arc<AtomicU64>,
}

/// Interval between two canary publishes.
const CANARY_EVERY: Duration = Duration::from_millis(5);
/// Longest the canary may go without a delivery before it counts as stopped.
pub const CANARY_MAX_STALL: Duration = Duration::from_secs(3);
/// Hard cap on canary publishes (bounds the loop whatever the test does).
const CANARY_MAX_PUBLISHES: u64 = 20_000;

impl Canary {
    pub async fn start(server: &ServerProcess, token: Option<&str>) -> Canary {
        let sub_client = server.client("canary-sub", token).await;
        let mut sub = bounded(
            "canary subscribe",
            sub_client.subscribe(
                CANARY_TOPIC,
                SubscribeOptions {
                    start: Start::Latest,
                    ..SubscribeOptions::default()
                },
            ),
        )
        .await
        .expect("canary subscribes");
        let (_, start_seq) = sub.started_at().expect("SubscribeOk seen");
        let pub_client = server.client("canary-pub", token).await;
        let stop = CancellationToken::new();
        // Outer Some: the publisher is done; inner: its last acked seq.
        let (last_tx, mut last_rx) = watch::channel(None::<Option<u64>>);
        let delivered = Arc::new(AtomicU64::new(0));

        let pub_stop = stop.clone();
        let publisher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CANARY_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            for i in 0..CANARY_MAX_PUBLISHES {
                tokio::select! {
                    _ = pub_stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let ack = tokio::time::timeout(
                    STEP,
                    pub_client.publish_acked(CANARY_TOPIC, format!("c{i}")),
                )
                .await
                .map_err(|_| format!("canary publish {i} not acked within {STEP:?}"))?
                .map_err(|e| format!("canary publish {i} failed: {e}"))?;
                last = Some(ack.seq);
            }
            let _ = last_tx.send(Some(last));
            drop(pub_client);
            Ok(last)
        });

        let count = delivered.clone();
        let subscriber = tokio::spawn(async move {
            let _client = sub_client;
            let mut next = start_seq;
            let mut last_at = Instant::now();
            let mut max_stall = Duration::ZERO;
            loop {
                if let Some(last) = *last_rx.borrow() {
                    if last.is_none_or(|last| next > last) {
                        break;
                    }
                }
                let event = tokio::select! {
                    _ = last_rx.changed() => continue,
                    e = tokio::time::timeout(STEP, sub.next()) => e,
                };
                let event = match event {
                    Err(_) => {
                        return Err(format!(
                            "canary got nothing for {STEP:?} (expecting seq {next})"
                        ))
                    }
                    Ok(None) => {
                        return Err(format!("canary subscription ended (expecting seq {next})"))
                    }
                    Ok(Some(Err(e))) => return Err(format!("canary subscription failed: {e}")),
                    Ok(Some(Ok(e))) => e,
                };
                match event {
                    Event::Message { seq, .. } => {
                        if seq != next {
                            return Err(format!("canary gap: expected seq {next}, got {seq}"));
                        }
                        next += 1;
                        max_stall = max_stall.max(last_at.elapsed());
                        last_at = Instant::now();
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    other @ (Event::Resync { .. } | Event::Joined { .. } | Event::Left { .. }) => {
                        return Err(format!("canary got {other:?}"))
                    }
                }
            }
            Ok(CanaryReport {
                delivered: count.load(Ordering::Relaxed),
                max_stall,
            })
        });
        let canary = Canary {
            stop,
            publisher,
            subscriber,
            delivered,
        };
        canary.wait_flowing(3).await;
        canary
    }

    /// Messages delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Waits until `n` more messages have been delivered: the canary flows
    /// now, not only after the attack.
    pub async fn wait_flowing(&self, n: u64) {
        let target = self.delivered() + n;
        let deadline = Instant::now() + CANARY_MAX_STALL;
        while self.delivered() < target {
            assert!(
                Instant::now() < deadline,
                "canary stopped flowing: {} of {n} messages in {CANARY_MAX_STALL:?}",
                n - (target - self.delivered())
            );
            tokio::time::sleep(CANARY_EVERY).await;
        }
    }

    /// Stops publishing, waits for every acked message to arrive, and
    /// asserts the canary never saw a gap, a resync or a long stall.
    pub async fn finish(self) -> CanaryReport {
        self.stop.cancel();
        let last = bounded("canary publisher", self.publisher)
            .await
            .expect("canary publisher task")
            .unwrap_or_else(|e| panic!("{e}"));
        let report = bounded("canary subscriber", self.subscriber)
            .await
            .expect("canary subscriber task")
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "[abuse] canary: {} delivered (last seq {last:?}), longest stall {:?}",
            report.delivered, report.max_stall
        );
        assert!(
            report.max_stall <= CANARY_MAX_STALL,
            "canary stalled for {:?} (bound {CANARY_MAX_STALL:?})",
            report.max_stall
        );
        report
    }
}

/// The Lapwing code of a gRPC status (`lapwing-error-code` metadata).
pub fn lapwing_code(status: &tonic::Status) -> Option<i32> {
    status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

/// Whether `code` names a Lapwing error code.
pub fn is_lapwing_code(code: i32) -> bool {
    matches!(ErrorCode::try_from(code), Ok(c) if c != ErrorCode::Unspecified)
}

/// A raw LEB128 varint, as frames' length prefixes are written.
pub fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(v, &mut out);
    out
}
