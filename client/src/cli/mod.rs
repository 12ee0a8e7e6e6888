//! The `lapwing` command line, as a library: [`run`] parses nothing and
//! writes to the `impl Write`s it is given, so tests drive it in-process.
//! `src/bin/lapwing.rs` only parses arguments and sets up the runtime.

mod admin;
mod auth;
mod bench;
mod output;
mod publish;
mod subscribe;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use lapwing_proto::defaults;

use crate::{Client, ClientConfig, LagPolicy, Trust};

/// Re-exported so callers can `Cli::try_parse_from` without depending on clap.
pub use clap::Parser;

pub use admin::{AdminConn, ConnectionsArgs, StatsArgs, TopicsArgs};
pub use auth::{ActionArg, AuthArgs, AuthCommand};
pub use bench::BenchArgs;
pub use output::base64_encode;
pub use publish::PubArgs;
pub use subscribe::SubArgs;

/// Publish to and subscribe to topics of a Lapwing message bus server, measure
/// its fanout, and manage its topics and connections (gRPC Admin API).
#[derive(Debug, Parser)]
#[command(name = "lapwing", version)]
pub struct Cli {
    /// How to reach and trust the server (global flags).
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach and trust the server (global flags).
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Server QUIC address; several, comma-separated, to fail over between
    /// the nodes of a cluster (`a:7400,b:7400,c:7400`).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:7400",
        env = "LAPWING_SERVER"
    )]
    pub server: String,
    /// Name to verify in the server's certificate.
    #[arg(long, global = true, default_value = defaults::SERVER_NAME)]
    pub server_name: String,
    /// Trust this CA or server certificate (PEM).
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["fingerprint", "insecure"])]
    pub ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint
    /// (printed by lapwing-server at start).
    #[arg(long, global = true, value_name = "HEX", conflicts_with = "insecure")]
    pub fingerprint: Option<String>,
    /// Accept any server certificate (development only).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Auth token.
    #[arg(long, global = true, env = "LAPWING_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client certificate (PEM) to present: on a server with
    /// `tls.client_ca` it names the principal without a token.
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

/// The `lapwing` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish messages to a topic.
    Pub(PubArgs),
    /// Subscribe to a topic and print what arrives (resyncs included).
    Sub(SubArgs),
    /// Measure fanout: 1 publisher to N subscribers over the network.
    Bench(BenchArgs),
    /// Manage topics through the gRPC Admin API (list, create, delete, stats).
    Topics(TopicsArgs),
    /// List or close connections through the gRPC Admin API.
    Connections(ConnectionsArgs),
    /// Server info and totals; `--watch` for live stats.
    Stats(StatsArgs),
    /// Principals: hash a token for the config, check a permission.
    Auth(AuthArgs),
}

/// `--lag-policy` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LagPolicyArg {
    /// Continue at the oldest message the ring still holds (a resync says
    /// how many were missed).
    #[default]
    ResumeOldest,
    /// Continue at the latest message (conflation; a resync says how many
    /// were skipped).
    SkipToLatest,
    /// End the subscription with the error LAGGED.
    Disconnect,
}

impl From<LagPolicyArg> for LagPolicy {
    fn from(p: LagPolicyArg) -> LagPolicy {
        match p {
            LagPolicyArg::ResumeOldest => LagPolicy::ResumeOldest,
            LagPolicyArg::SkipToLatest => LagPolicy::SkipToLatest,
            LagPolicyArg::Disconnect => LagPolicy::Disconnect,
        }
    }
}

/// Where input comes from and output goes, and whether it may use colour.
pub struct Io<'a> {
    /// Where results go (standard output in the binary).
    pub out: &'a mut (dyn Write + Send),
    /// Where progress and summaries go (standard error in the binary).
    pub err: &'a mut (dyn Write + Send),
    /// Lines for `pub --stdin`; `None` reads the process's standard input.
    pub input: Option<Box<dyn std::io::BufRead + Send + 'a>>,
    /// Colour resyncs (the binary sets it when stdout is a terminal).
    pub color: bool,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("color", &self.color)
            .finish_non_exhaustive()
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli, io: &mut Io<'_>) -> anyhow::Result<()> {
    match cli.command {
        Command::Pub(args) => publish::run(&cli.conn, args, io).await,
        Command::Sub(args) => subscribe::run(&cli.conn, args, io).await,
        Command::Bench(args) => bench::run(&cli.conn, args, io).await,
        Command::Topics(args) => admin::topics(&cli.conn, args, io).await,
        Command::Connections(args) => admin::connections(&cli.conn, args, io).await,
        Command::Stats(args) => admin::stats(&cli.conn, args, io).await,
        Command::Auth(args) => auth::run(&cli.conn, args, io).await,
    }
}

impl ConnArgs {
    /// The trust option: a flag, else the local server's certificate in
    /// the default data dir, else an error naming the flags.
    pub fn trust(&self) -> anyhow::Result<Trust> {
        if let Some(ca) = &self.ca {
            return Ok(Trust::CaFile(ca.clone()));
        }
        if let Some(fp) = &self.fingerprint {
            return Ok(Trust::Fingerprint(fp.clone()));
        }
        if self.insecure {
            return Ok(Trust::Insecure);
        }
        let local = defaults::default_data_dir().join(defaults::CERT_FILE);
        if local.is_file() {
            return Ok(Trust::CaFile(local));
        }
        bail!(
            "no way to trust the server: pass --ca FILE (its certificate or CA), \
             --fingerprint HEX (lapwing-server prints it at start) or --insecure \
             (development only). No local server certificate at {}",
            local.display()
        )
    }

    /// The [`ClientConfig`] these flags describe (client name `lapwing-cli`).
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let mut cfg = ClientConfig::new(self.server.clone(), self.trust()?);
        cfg.server_name = self.server_name.clone();
        cfg.token = self.token.clone().filter(|t| !t.is_empty());
        cfg.client_certificate = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(crate::ClientCertificate {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        cfg.client_name = "lapwing-cli".to_owned();
        Ok(cfg)
    }

    /// Connects with [`ConnArgs::client_config`]; the error names the server.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let cfg = self.client_config()?;
        Client::connect(cfg)
            .await
            .with_context(|| format!("cannot connect to {}", self.server))
    }
}
