//! The server under soak: a `lapwing-server` process of its own (so its
//! RSS and descriptors are its own, read from `/proc`), its Admin API and
//! its `/metrics`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use lapwing_proto::v1::admin_client::AdminClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

/// A running server, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) quic: SocketAddr,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `bin` on loopback ports the OS picks, with a config for the
    /// soak: topic rings of 256 KiB (a few hundred messages, so slow
    /// subscribers are lapped within seconds) and messages up to 16 KiB.
    pub(crate) fn start(bin: &Path) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("lapwing.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\nlog_format = \"json\"\n\
                 [listen]\nquic = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\
                 [limits]\nmax_message_bytes = 16384\n\
                 [topic_defaults]\nring_bytes = 262144\n",
                dir.path()
            ),
        )?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (var, _) in std::env::vars() {
            if var.starts_with("LAPWING_") {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("stdout piped")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Drains the log for the server's whole life (a full pipe would
        // block it); only the addresses and the certificate are kept.
        std::thread::spawn(move || {
            let mut cert = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let f = &v["fields"];
                if let Some(c) = f["cert"].as_str() {
                    cert = Some(PathBuf::from(c));
                }
                if f["message"] == "lapwing server listening" {
                    let addr = |k: &str| f[k].as_str().and_then(|s| s.parse().ok());
                    let _ = tx.send((addr("quic"), addr("grpc"), addr("http"), cert.clone()));
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((Some(quic), Some(grpc), Some(http), Some(cert))) => Ok(Server {
                child,
                quic,
                grpc,
                http,
                cert,
                _dir: dir,
            }),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("lapwing-server did not report its addresses: {other:?}")
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// VmRSS in bytes.
    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| path.clone())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .with_context(|| format!("no VmRSS in {path}"))
    }

    /// Open file descriptors.
    pub(crate) fn fds(&self) -> anyhow::Result<usize> {
        let path = format!("/proc/{}/fd", self.pid());
        Ok(std::fs::read_dir(&path)
            .with_context(|| path.clone())?
            .count())
    }

    /// Whether the process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A gRPC channel (plaintext: the listener is on loopback).
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))?
                .connect_timeout(Duration::from_secs(10))
                .connect()
                .await?,
        )
    }

    pub(crate) async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel().await?))
    }

    /// `/metrics` as text.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        let fetch = async {
            let mut tcp = tokio::net::TcpStream::connect(self.http).await?;
            let req = format!(
                "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.http
            );
            tcp.write_all(req.as_bytes()).await?;
            let mut body = String::new();
            tcp.read_to_string(&mut body).await?;
            anyhow::Ok(body)
        };
        tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .context("metrics timed out")?
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
