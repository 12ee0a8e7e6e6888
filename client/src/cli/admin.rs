//! `lapwing topics …`, `lapwing connections …`, `lapwing stats`: the
//! operator commands, through the server's gRPC Admin API.
//!
//! Every command takes `--grpc HOST:PORT` (default `127.0.0.1:7401`,
//! `LAPWING_GRPC`) and `--admin-token` (`LAPWING_ADMIN_TOKEN`), prints a
//! human table by default and one JSON document (or, for `stats --watch`,
//! one JSON object per line) with `--json`. TLS (trusting `--ca FILE` or the
//! local server's certificate) is used with `--grpc-tls`, an `https://`
//! address, and for every host that is not loopback; a plaintext
//! (`http://`) address off loopback is refused, so the admin token never
//! crosses a network in the clear.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use futures::StreamExt;
use lapwing_proto::defaults;
use lapwing_proto::v1::admin_client::AdminClient;
use lapwing_proto::v1::{
    CloseConnectionRequest, ConnectionInfo, CreateTopicRequest, DeleteTopicRequest,
    GetTopicRequest, ListConnectionsRequest, ListTopicsRequest, ServerInfoRequest,
    ServerInfoResponse, StatsSnapshot, TopicInfo, WatchStatsRequest,
};
use serde_json::{json, Value};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::{ConnArgs, Io};

/// How to reach the Admin API.
#[derive(Debug, Clone, Args)]
pub struct AdminConn {
    /// Server gRPC address (HOST:PORT, or an http:// / https:// URL).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:7401",
        env = "LAPWING_GRPC"
    )]
    pub grpc: String,
    /// The server's admin token (sent as `authorization: Bearer …`).
    #[arg(
        long,
        global = true,
        env = "LAPWING_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Connect with TLS (the server's `tls.grpc`), trusting --ca or the
    /// local server's certificate. Always on for a non-loopback host.
    #[arg(long, global = true)]
    pub grpc_tls: bool,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `lapwing topics …`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// What to do with topics.
    #[command(subcommand)]
    pub command: TopicsCommand,
    /// How to reach the Admin API.
    #[command(flatten)]
    pub admin: AdminConn,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// List every topic with its head, retention and counters.
    List,
    /// Create a topic with its own ring size and message limit.
    Create {
        name: String,
        /// Ring capacity in bytes (default: the server's).
        #[arg(long, default_value_t = 0)]
        ring_bytes: u64,
        /// Largest payload in bytes (default: the server's).
        #[arg(long, default_value_t = 0)]
        max_message_bytes: u64,
    },
    /// Delete a topic: its subscriptions end; the name can be reused (new epoch).
    Delete { name: String },
    /// One topic's stats.
    Stats { name: String },
}

/// `lapwing connections …`.
#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    /// What to do with connections.
    #[command(subcommand)]
    pub command: ConnectionsCommand,
    /// How to reach the Admin API.
    #[command(flatten)]
    pub admin: AdminConn,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// List connections (both transports) and their subscriptions with lag.
    List,
    /// Close a connection (its client may reconnect).
    Close {
        id: u64,
        /// Reason, logged by the server and shown to the client.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// `lapwing stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Keep printing a snapshot every --interval-ms until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Interval between snapshots (minimum 100).
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u32,
    /// Include per-topic stats.
    #[arg(long)]
    pub topics: bool,
    /// With --watch: stop after this many snapshots.
    #[arg(long)]
    pub count: Option<u64>,
    /// How to reach the Admin API.
    #[command(flatten)]
    pub admin: AdminConn,
}

type Client = AdminClient<tonic::service::interceptor::InterceptedService<Channel, AuthHeader>>;

/// How the CLI will reach the Admin API: decided from the flags alone,
/// before any connection, so a refusal costs no network traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    url: String,
    tls: bool,
}

/// Whether `host` (from a URL authority, IPv6 in brackets or not) is this
/// machine: `localhost` or a loopback address. Other names are not
/// resolved: a name counts as remote.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl AdminConn {
    /// The URL and whether to use TLS. TLS is used with `--grpc-tls`, an
    /// `https://` address, and for every host that is not loopback:
    /// admin calls carry a bearer token and can delete topics and close
    /// connections, so they never cross a network in plaintext. An explicit
    /// `http://` address of a non-loopback host is refused.
    fn route(&self) -> anyhow::Result<Route> {
        let (scheme, rest) = match self.grpc.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, self.grpc.as_str()),
        };
        let uri: tonic::codegen::http::Uri = format!("http://{rest}")
            .parse()
            .with_context(|| format!("bad --grpc address `{}`", self.grpc))?;
        let host = uri
            .host()
            .with_context(|| format!("bad --grpc address `{}`: no host", self.grpc))?;
        let loopback = is_loopback_host(host);
        let tls = match scheme.as_deref() {
            Some("https") => true,
            Some("http") if !loopback => {
                let token = if self.admin_token.as_deref().is_some_and(|t| !t.is_empty()) {
                    " and would send the admin token in plaintext"
                } else {
                    ""
                };
                bail!(
                    "refusing a plaintext connection to the Admin API at {host}: it is not a \
                     loopback address{token}. Use TLS: drop `http://` (or write `https://`, \
                     or pass --grpc-tls), with --ca FILE to trust the server"
                );
            }
            Some("http") => self.grpc_tls,
            Some(other) => bail!("bad --grpc address `{}`: unknown scheme {other}", self.grpc),
            None => self.grpc_tls || !loopback,
        };
        let url = format!("{}://{rest}", if tls { "https" } else { "http" });
        Ok(Route { url, tls })
    }

    pub(super) async fn connect(&self, conn: &ConnArgs) -> anyhow::Result<Client> {
        let Route { url, tls } = self.route()?;
        let mut endpoint = Channel::from_shared(url.clone())
            .with_context(|| format!("bad --grpc address `{}`", self.grpc))?
            .connect_timeout(Duration::from_secs(10));
        if tls {
            let ca = match &conn.ca {
                Some(path) => path.clone(),
                None => defaults::default_data_dir().join(defaults::CERT_FILE),
            };
            let pem = std::fs::read(&ca).with_context(|| {
                format!(
                    "cannot read {} to trust the gRPC server over TLS (pass --ca FILE)",
                    ca.display()
                )
            })?;
            endpoint = endpoint.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name(conn.server_name.clone()),
            )?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to the gRPC API at {url}"))?;
        let token = self.admin_token.clone().filter(|t| !t.is_empty());
        let header = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<tonic::metadata::MetadataValue<_>>()
                    .context("the admin token is not valid in a header")?,
            ),
            None => None,
        };
        Ok(AdminClient::with_interceptor(channel, AuthHeader(header)))
    }
}

/// Adds `authorization: Bearer <admin token>` to every call.
#[derive(Debug, Clone)]
pub(crate) struct AuthHeader(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AuthHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A failed call, with what to do about auth errors.
pub(super) fn call_error(status: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let hint = match status.code() {
        Code::Unauthenticated => " (pass --admin-token or set LAPWING_ADMIN_TOKEN)",
        Code::PermissionDenied => " (this is not the admin token)",
        Code::Unimplemented => " (the server does not serve the Admin API on this listener: it needs an admin token, or a loopback listener)",
        _ => "",
    };
    anyhow::anyhow!("{}: {}{hint}", code_name(status.code()), status.message())
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let sep = (i > 0 && c.is_uppercase()).then_some('_');
            sep.into_iter().chain(c.to_uppercase())
        })
        .collect()
}

/// Where a command's result goes, and in which form: every admin command
/// prints one JSON document with `--json` and text for people otherwise,
/// and goes through [`Printer::show`] (or [`Printer::list`]) to do so.
pub(super) struct Printer<'a> {
    pub(super) out: &'a mut (dyn Write + Send),
    pub(super) json: bool,
}

impl Printer<'_> {
    /// Prints `value` as `to_json` makes it, or as `human` writes it.
    pub(super) fn show<T: ?Sized>(
        &mut self,
        value: &T,
        to_json: impl FnOnce(&T) -> Value,
        human: impl FnOnce(&mut (dyn Write + Send), &T) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        if self.json {
            writeln!(self.out, "{}", to_json(value))?;
        } else {
            human(self.out, value)?;
        }
        self.out.flush()?;
        Ok(())
    }

    /// A list: a JSON array of `item_json`, or the table `table` writes.
    fn list<T>(
        &mut self,
        items: &[T],
        item_json: impl Fn(&T) -> Value,
        table: impl FnOnce(&mut (dyn Write + Send), &[T]) -> std::io::Result<()>,
    ) -> anyhow::Result<()> {
        self.show(
            items,
            |items| Value::Array(items.iter().map(item_json).collect()),
            table,
        )
    }
}

pub(crate) async fn topics(
    conn: &ConnArgs,
    args: TopicsArgs,
    io: &mut Io<'_>,
) -> anyhow::Result<()> {
    let mut client = args.admin.connect(conn).await?;
    let mut print = Printer {
        out: io.out,
        json: args.admin.json,
    };
    match args.command {
        TopicsCommand::List => {
            let topics = client
                .list_topics(ListTopicsRequest {})
                .await
                .map_err(call_error)?
                .into_inner()
                .topics;
            print.list(&topics, topic_json, write_topic_table)
        }
        TopicsCommand::Create {
            name,
            ring_bytes,
            max_message_bytes,
        } => {
            let t = client
                .create_topic(CreateTopicRequest {
                    name,
                    ring_bytes,
                    max_message_bytes,
                })
                .await
                .map_err(call_error)?
                .into_inner();
            print.show(&t, topic_json, |out, t| {
                writeln!(
                    out,
                    "created topic {} (epoch {}, ring {} B, max message {} B)",
                    t.name, t.epoch, t.ring_bytes, t.max_message_bytes
                )
            })
        }
        TopicsCommand::Delete { name } => {
            client
                .delete_topic(DeleteTopicRequest { name: name.clone() })
                .await
                .map_err(call_error)?;
            print.show(
                name.as_str(),
                |name| json!({"deleted": true, "name": name}),
                |out, name| writeln!(out, "deleted topic {name}"),
            )
        }
        TopicsCommand::Stats { name } => {
            let t = client
                .get_topic(GetTopicRequest { name })
                .await
                .map_err(call_error)?
                .into_inner();
            print.show(&t, topic_json, write_topic_stats)
        }
    }
}

/// One topic's stats, a field per line.
fn write_topic_stats(out: &mut (dyn Write + Send), t: &TopicInfo) -> std::io::Result<()> {
    let rows = [
        ("name", t.name.clone()),
        ("epoch", t.epoch.to_string()),
        ("head_seq", t.head_seq.to_string()),
        ("oldest_retained_seq", t.oldest_retained_seq.to_string()),
        ("ring_bytes", t.ring_bytes.to_string()),
        ("max_message_bytes", t.max_message_bytes.to_string()),
        ("published_messages", t.published_messages.to_string()),
        ("published_bytes", t.published_bytes.to_string()),
        ("publish_rate", format!("{:.1}/s", t.publish_rate)),
        ("subscribers", t.subscribers.to_string()),
        ("resyncs_sent", t.resyncs_sent.to_string()),
        ("messages_missed", t.messages_missed.to_string()),
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<20} {v}")?;
    }
    Ok(())
}

pub(crate) async fn connections(
    conn: &ConnArgs,
    args: ConnectionsArgs,
    io: &mut Io<'_>,
) -> anyhow::Result<()> {
    let mut client = args.admin.connect(conn).await?;
    let mut print = Printer {
        out: io.out,
        json: args.admin.json,
    };
    match args.command {
        ConnectionsCommand::List => {
            let conns = client
                .list_connections(ListConnectionsRequest {})
                .await
                .map_err(call_error)?
                .into_inner()
                .connections;
            print.list(&conns, connection_json, write_connection_table)
        }
        ConnectionsCommand::Close { id, reason } => {
            let closed = client
                .close_connection(CloseConnectionRequest { id, reason })
                .await
                .map_err(call_error)?
                .into_inner()
                .closed;
            print.show(
                &closed,
                |closed| json!({"id": id, "closed": closed}),
                |out, &closed| match closed {
                    true => writeln!(out, "closed connection {id}"),
                    false => Ok(()),
                },
            )?;
            if !closed {
                bail!("no connection with id {id}");
            }
            Ok(())
        }
    }
}

pub(crate) async fn stats(conn: &ConnArgs, args: StatsArgs, io: &mut Io<'_>) -> anyhow::Result<()> {
    let mut client = args.admin.connect(conn).await?;
    let mut print = Printer {
        out: io.out,
        json: args.admin.json,
    };
    if !args.watch {
        let info = client
            .server_info(ServerInfoRequest {})
            .await
            .map_err(call_error)?
            .into_inner();
        let mut watch = client
            .watch_stats(WatchStatsRequest {
                interval_ms: 100,
                include_topics: args.topics,
            })
            .await
            .map_err(call_error)?
            .into_inner();
        let snap = match watch.next().await {
            Some(s) => s.map_err(call_error)?,
            None => bail!("the server ended the stats stream"),
        };
        return print.show(
            &(info, snap),
            |(info, snap)| {
                let mut v = snapshot_json(snap);
                v["server"] = server_info_json(info);
                v
            },
            |out, (info, snap)| write_server_info(out, info, snap),
        );
    }
    let mut watch = client
        .watch_stats(WatchStatsRequest {
            interval_ms: args.interval_ms,
            include_topics: args.topics,
        })
        .await
        .map_err(call_error)?
        .into_inner();
    let mut previous: Option<StatsSnapshot> = None;
    let mut printed = 0u64;
    while let Some(snap) = watch.next().await {
        let snap = snap.map_err(call_error)?;
        print.show(&snap, snapshot_json, |out, snap| {
            write_snapshot(out, snap, previous.as_ref())
        })?;
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
        previous = Some(snap);
    }
    Ok(())
}

fn server_info_json(info: &ServerInfoResponse) -> Value {
    json!({
        "version": info.version,
        "server_name": info.server_name,
        "uptime_seconds": info.uptime_seconds,
        "quic_listen": info.quic_listen,
        "grpc_listen": info.grpc_listen,
        "http_listen": info.http_listen,
        "grpc_tls": info.grpc_tls,
        "max_message_bytes": info.max_message_bytes,
        "max_connections": info.max_connections,
        "max_subscriptions_per_connection": info.max_subscriptions_per_connection,
        "default_ring_bytes": info.default_ring_bytes,
        "cert_fingerprint_sha256": info.cert_fingerprint_sha256,
    })
}

/// `lapwing stats` without `--watch`: the server, its limits, one snapshot.
fn write_server_info(
    out: &mut (dyn Write + Send),
    info: &ServerInfoResponse,
    snap: &StatsSnapshot,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} {} up {}s  quic {}  grpc {}{}  http {}",
        info.server_name,
        info.version,
        info.uptime_seconds,
        info.quic_listen,
        info.grpc_listen,
        if info.grpc_tls { " (tls)" } else { "" },
        info.http_listen
    )?;
    writeln!(
        out,
        "limits: max message {} B, {} connections, {} subscriptions/connection, default ring {} B",
        info.max_message_bytes,
        info.max_connections,
        info.max_subscriptions_per_connection,
        info.default_ring_bytes
    )?;
    write_snapshot(out, snap, None)
}

fn topic_json(t: &TopicInfo) -> Value {
    json!({
        "name": t.name,
        "epoch": t.epoch,
        "head_seq": t.head_seq,
        "oldest_retained_seq": t.oldest_retained_seq,
        "ring_bytes": t.ring_bytes,
        "max_message_bytes": t.max_message_bytes,
        "published_messages": t.published_messages,
        "published_bytes": t.published_bytes,
        "publish_rate": t.publish_rate,
        "subscribers": t.subscribers,
        "resyncs_sent": t.resyncs_sent,
        "messages_missed": t.messages_missed,
        "created_unix_nanos": t.created_unix_nanos,
    })
}

fn connection_json(c: &ConnectionInfo) -> Value {
    json!({
        "id": c.id,
        "transport": c.transport,
        "peer_address": c.peer_address,
        "client_name": c.client_name,
        "connected_unix_nanos": c.connected_unix_nanos,
        "subscriptions": c.subscriptions.iter().map(|s| json!({
            "id": s.id,
            "topic": s.topic,
            "next_seq": s.next_seq,
            "lag": s.lag,
            "delivered": s.delivered,
            "resyncs": s.resyncs,
            "missed": s.missed,
        })).collect::<Vec<_>>(),
    })
}

fn snapshot_json(s: &StatsSnapshot) -> Value {
    json!({
        "unix_nanos": s.unix_nanos,
        "connections": s.connections,
        "subscriptions": s.subscriptions,
        "topics": s.topics,
        "published_messages": s.published_messages,
        "delivered_messages": s.delivered_messages,
        "resyncs_sent": s.resyncs_sent,
        "messages_missed": s.messages_missed,
        "topic_stats": s.topic_stats.iter().map(topic_json).collect::<Vec<_>>(),
    })
}

/// Left-aligned columns sized to their widest cell.
fn write_table(out: &mut (dyn Write + Send), rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

fn write_topic_table(out: &mut (dyn Write + Send), topics: &[TopicInfo]) -> std::io::Result<()> {
    if topics.is_empty() {
        return writeln!(out, "no topics");
    }
    let mut rows = vec![[
        "TOPIC", "EPOCH", "HEAD", "OLDEST", "RING", "MSGS", "RATE/S", "SUBS", "RESYNCS", "MISSED",
    ]
    .map(str::to_owned)
    .to_vec()];
    for t in topics {
        rows.push(vec![
            t.name.clone(),
            format!("{:016x}", t.epoch),
            t.head_seq.to_string(),
            t.oldest_retained_seq.to_string(),
            t.ring_bytes.to_string(),
            t.published_messages.to_string(),
            format!("{:.1}", t.publish_rate),
            t.subscribers.to_string(),
            t.resyncs_sent.to_string(),
            t.messages_missed.to_string(),
        ]);
    }
    write_table(out, &rows)
}

fn write_connection_table(
    out: &mut (dyn Write + Send),
    conns: &[ConnectionInfo],
) -> std::io::Result<()> {
    if conns.is_empty() {
        return writeln!(out, "no connections");
    }
    let mut rows = vec![[
        "ID",
        "TRANSPORT",
        "PEER",
        "CLIENT",
        "SUB",
        "TOPIC",
        "NEXT",
        "LAG",
        "DELIVERED",
        "RESYNCS",
        "MISSED",
    ]
    .map(str::to_owned)
    .to_vec()];
    for c in conns {
        let head = vec![
            c.id.to_string(),
            c.transport.clone(),
            c.peer_address.clone(),
            c.client_name.clone(),
        ];
        if c.subscriptions.is_empty() {
            rows.push(head);
            continue;
        }
        for (i, s) in c.subscriptions.iter().enumerate() {
            let mut row = if i == 0 {
                head.clone()
            } else {
                vec![String::new(); 4]
            };
            row.extend([
                s.id.to_string(),
                s.topic.clone(),
                s.next_seq.to_string(),
                s.lag.to_string(),
                s.delivered.to_string(),
                s.resyncs.to_string(),
                s.missed.to_string(),
            ]);
            rows.push(row);
        }
    }
    write_table(out, &rows)
}

fn write_snapshot(
    out: &mut (dyn Write + Send),
    s: &StatsSnapshot,
    previous: Option<&StatsSnapshot>,
) -> std::io::Result<()> {
    let rate = |now: u64, before: Option<u64>| match (previous, before) {
        (Some(p), Some(b)) if s.unix_nanos > p.unix_nanos => {
            let secs = (s.unix_nanos - p.unix_nanos) as f64 / 1e9;
            format!(" ({:.0}/s)", now.saturating_sub(b) as f64 / secs)
        }
        _ => String::new(),
    };
    writeln!(
        out,
        "connections {}  subscriptions {}  topics {}  published {}{}  delivered {}{}  resyncs {}  missed {}",
        s.connections,
        s.subscriptions,
        s.topics,
        s.published_messages,
        rate(s.published_messages, previous.map(|p| p.published_messages)),
        s.delivered_messages,
        rate(s.delivered_messages, previous.map(|p| p.delivered_messages)),
        s.resyncs_sent,
        s.messages_missed,
    )?;
    if !s.topic_stats.is_empty() {
        write_topic_table(out, &s.topic_stats)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(grpc: &str, tls: bool, token: Option<&str>) -> AdminConn {
        AdminConn {
            grpc: grpc.into(),
            admin_token: token.map(Into::into),
            grpc_tls: tls,
            json: false,
        }
    }

    fn route(grpc: &str, tls: bool, token: Option<&str>) -> anyhow::Result<Route> {
        admin(grpc, tls, token).route()
    }

    #[test]
    fn loopback_stays_plaintext_unless_asked() {
        for grpc in [
            "127.0.0.1:7401",
            "localhost:7401",
            "[::1]:7401",
            "http://127.0.0.1:7401",
        ] {
            let r = route(grpc, false, Some("t")).unwrap();
            assert!(!r.tls, "{grpc}");
            assert!(r.url.starts_with("http://"), "{grpc}: {}", r.url);
        }
        assert!(route("127.0.0.1:7401", true, None).unwrap().tls);
        assert!(route("https://localhost:7401", false, None).unwrap().tls);
    }

    #[test]
    fn every_other_host_gets_tls() {
        for grpc in [
            "10.0.0.5:7401",
            "bus.example.org:7401",
            "[2001:db8::1]:7401",
        ] {
            let r = route(grpc, false, Some("t")).unwrap();
            assert!(r.tls, "{grpc}");
            assert_eq!(r.url, format!("https://{grpc}"));
        }
    }

    #[test]
    fn plaintext_off_loopback_is_refused_with_the_reason() {
        let err = route("http://10.0.0.5:7401", false, Some("s3cret")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not a loopback address"), "{msg}");
        assert!(msg.contains("admin token in plaintext"), "{msg}");
        assert!(msg.contains("--grpc-tls"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
        let err = route("http://bus.example.org:7401", false, None).unwrap_err();
        assert!(err.to_string().contains("--grpc-tls"), "{err}");
    }
}
