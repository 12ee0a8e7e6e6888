//! Server configuration: one typed struct, read from a TOML file, then
//! `LAPWING_*` environment variables, then command-line flags (flags win).
//!
//! Every key has a default that runs a useful server on loopback with no
//! file at all. [`Config::validate`] checks everything at once and reports
//! every problem, so an operator fixes a config in one round instead of one
//! error per restart.
//!
//! The documented example with every key is `server/lapwing.example.toml`
//! (a test keeps it parsing to the defaults); the doc comment on each field
//! below says the same (why, and the default).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bound for `limits.max_message_bytes`: 64 MiB.
pub const HARD_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Smallest ring a topic may have: 4 KiB. The ring itself accepts 1 KiB,
/// but a topic's ring must also hold a useful history of messages
/// carrying the server's 8-byte publish time.
pub const MIN_RING_BYTES: usize = 4 * 1024;

/// Default ring size per topic: 4 MiB.
///
/// It must hold at least one maximum-size message (1 MiB by default) with
/// room to spare, so a burst of large messages does not lap a subscriber
/// that is one message behind. Rings are allocated when a topic sees its
/// first publish, so idle topics cost no ring memory at all (see
/// `crate::topic`). Small, chatty topics should get a smaller ring via a
/// `[[topics]]` override, large fan-in topics a bigger one.
pub const DEFAULT_RING_BYTES: usize = 4 * 1024 * 1024;
/// Default largest payload of one message: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default cap on live subscriptions of one connection.
pub const DEFAULT_MAX_SUBSCRIPTIONS: u32 = 1024;
/// Default cap on the number of topics.
pub const DEFAULT_MAX_TOPICS: usize = 100_000;
/// Default budget for all topics' rings together: 1 GiB (256 default rings).
pub const DEFAULT_RING_MEMORY_BYTES: usize = 1024 * 1024 * 1024;
/// Default number of topics one connection may create: 1000.
pub const DEFAULT_TOPICS_CREATED_PER_CONNECTION: u32 = 1000;
/// Default budget for bytes held for partial frames, all clients: 64 MiB.
pub const DEFAULT_PARTIAL_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Default concurrent publish streams per connection: 16.
pub const DEFAULT_MAX_PUBLISH_STREAMS: u32 = 16;
/// Default `limits.max_topics_per_wildcard`.
pub const DEFAULT_MAX_TOPICS_PER_WILDCARD: u32 = 1000;
/// Default UDP socket buffer size (send and receive): 4 MiB.
pub const DEFAULT_UDP_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(format!("`{other}` is not a log format (human|json)")),
        }
    }
}

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name the server reports in Welcome and logs. Default `lapwing`.
    pub server_name: String,
    /// Where the generated certificate and key live. Default:
    /// `$LAPWING_DATA_DIR`, else `$XDG_DATA_HOME/lapwing`, else
    /// `~/.local/share/lapwing`, else `./lapwing-data`.
    pub data_dir: PathBuf,
    /// `human` (default) or `json`.
    pub log_format: LogFormat,
    /// Listen addresses.
    pub listen: ListenConfig,
    /// Certificate and key.
    pub tls: TlsConfig,
    /// Who may connect.
    pub auth: AuthConfig,
    /// Limits that protect the server from a client.
    pub limits: LimitsConfig,
    /// Settings for topics that have no `[[topics]]` entry.
    pub topic_defaults: TopicDefaults,
    /// Per-topic overrides, matched by exact name first, then by the longest prefix.
    pub topics: Vec<TopicOverride>,
    /// Who may connect, and what each may do (see `crate::permissions`).
    /// Once any is configured, what a principal is not allowed is denied.
    pub principals: Vec<PrincipalConfig>,
    /// Socket tuning.
    pub transport: TransportConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Cluster mode (`[backbone]`); off without `backbone.url`.
    pub backbone: BackboneConfig,
    /// The file this config was read from, if any: what a reload of the
    /// principals reads again. Not a key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// Listen addresses. Loopback by default: exposing a server is a decision.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// QUIC (UDP). Default `127.0.0.1:7400`.
    pub quic: SocketAddr,
    /// gRPC (TCP): Bus, Admin, health, reflection. Default `127.0.0.1:7401`.
    pub grpc: SocketAddr,
    /// HTTP: `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:7402`.
    pub http: SocketAddr,
}

/// TLS material. With neither set, a self-signed certificate is generated
/// in `data_dir` on first start and reused afterwards.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). Default: none (self-signed).
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`. Default: none (self-signed).
    pub key: Option<PathBuf>,
    /// PEM CA certificate(s) whose client certificates name principals
    /// (`principals[].cert_subject`). Default: none (no client certificates
    /// are asked for). Clients without one still authenticate by token.
    pub client_ca: Option<PathBuf>,
    /// TLS on the gRPC listener, with the same certificate: `auto`
    /// (default: on unless `listen.grpc` is a loopback address, so local
    /// tools like grpcurl work with `-plaintext`), `on` or `off`.
    pub grpc: GrpcTls,
}

/// `tls.grpc`: whether the gRPC listener speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GrpcTls {
    /// TLS unless the listener is on a loopback address.
    #[default]
    Auto,
    /// Always TLS.
    On,
    /// Never TLS (plaintext HTTP/2); for loopback or a TLS-terminating proxy.
    Off,
}

impl GrpcTls {
    /// Whether a listener on `addr` uses TLS.
    pub fn enabled_for(self, addr: SocketAddr) -> bool {
        match self {
            GrpcTls::Auto => !addr.ip().is_loopback(),
            GrpcTls::On => true,
            GrpcTls::Off => false,
        }
    }
}

impl std::str::FromStr for GrpcTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => Err(format!("`{other}` is not a gRPC TLS mode (auto|on|off)")),
        }
    }
}

/// Authentication. With no tokens, everyone is accepted (and the server
/// warns when it listens on a non-loopback address that way).
#[derive(Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Tokens a client may present in Hello. Default: none (no auth).
    pub tokens: Vec<String>,
    /// Token every gRPC Admin call must present (`authorization: Bearer
    /// <token>`). Default: none, and then the Admin service is served only
    /// when the gRPC listener is on a loopback address, to anyone who can
    /// reach it there.
    pub admin_token: Option<String>,
    /// A TOML file of more `[[principals]]` entries (nothing else), read
    /// after this file's own; relative to this file's directory. It keeps
    /// who may do what apart from the rest of the config: a deployment can
    /// generate it, and SIGHUP re-reads it with this file. Default: none.
    pub principals_file: Option<PathBuf>,
}

impl std::fmt::Debug for AuthConfig {
    // Tokens are secrets: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "[redacted]"),
            )
            .field("principals_file", &self.principals_file)
            .finish()
    }
}

/// Limits. Each protects the server (and other clients) from one client.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest payload of one message, server-wide. A topic override may
    /// lower it. Default 1 MiB; at most 64 MiB.
    pub max_message_bytes: usize,
    /// Concurrent connections; one over gets closed with
    /// TOO_MANY_CONNECTIONS. Default 10 000.
    pub max_connections: usize,
    /// Live subscriptions per connection. Default 1024. Clients must allow
    /// this many concurrent server-opened uni streams to use them all at once.
    pub max_subscriptions_per_connection: u32,
    /// Topics in the registry; auto-creation fails beyond it with
    /// RESOURCE_EXHAUSTED. Default 100 000.
    pub max_topics: usize,
    /// Time a client has to send Hello after connecting. Default 10 s.
    pub hello_timeout_ms: u64,
    /// Ring memory of all topics together. A topic whose ring would take
    /// the total over it is refused with RESOURCE_EXHAUSTED; rings are
    /// reserved at their full size when a topic's first publish allocates
    /// them (the pages become resident only as messages fill them).
    /// Default 1 GiB: 256 topics at the default 4 MiB ring.
    pub ring_memory_bytes: usize,
    /// Topics one connection may create by publishing or subscribing, so
    /// one client cannot fill the registry. Default 1000.
    pub topics_created_per_connection: u32,
    /// Topics created by a publish or subscribe that have had no subscriber
    /// and no publish for this long are deleted, freeing their ring and
    /// their place in `max_topics`. 0 keeps them forever. Default 300 000 (5 min).
    pub idle_topic_ttl_ms: u64,
    /// Time a new connection has to finish its handshake (QUIC or TLS) and,
    /// on gRPC, send the HTTP/2 preface. A connection counts against
    /// `max_connections` only after it. Default 10 s.
    pub handshake_timeout_ms: u64,
    /// Time a frame (QUIC) or gRPC message has to arrive in full once its
    /// first bytes did; then the stream ends with TIMEOUT. Default 30 s.
    pub frame_timeout_ms: u64,
    /// Bytes held for frames and gRPC messages that have started arriving
    /// and are not complete, all connections together. A stream that would
    /// take it over ends with RESOURCE_EXHAUSTED. Default 64 MiB.
    pub partial_frame_bytes: usize,
    /// Publish streams one connection may have open at once: QUIC uni and
    /// acked (bidi) streams each, gRPC PublishStream calls. Each can hold
    /// one partial frame. Default 16.
    pub max_publish_streams_per_connection: u32,
    /// Topics one wildcard subscription may follow at once. A subscribe
    /// whose pattern matches more is refused, and a subscription that a
    /// new topic would take over it ends, both with RESOURCE_EXHAUSTED.
    /// Default 1000.
    pub max_topics_per_wildcard: u32,
}

/// One principal: a name, how it authenticates, and its rules.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrincipalConfig {
    /// Its name (logs, metrics, `{name}` in its patterns). Unique.
    pub name: String,
    /// Lowercase hex SHA-256 of its token (`lapwing auth hash` prints it),
    /// so the config file holds no secret.
    pub token_sha256: Option<String>,
    /// Its token in clear; accepted, with a warning at start.
    pub token: Option<String>,
    /// A client certificate (signed by `tls.client_ca`) names this
    /// principal when its subject is `CN=<this>` or one of its subject
    /// alternative names is this. Needs `tls.client_ca`.
    pub cert_subject: Option<String>,
    /// What it may publish to.
    pub publish: RulesConfig,
    /// What it may subscribe to.
    pub subscribe: RulesConfig,
    /// Whether its token may call the Admin API. Default false.
    pub admin: bool,
}

impl std::fmt::Debug for PrincipalConfig {
    // The token is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalConfig")
            .field("name", &self.name)
            .field("token_sha256", &self.token_sha256)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("cert_subject", &self.cert_subject)
            .field("publish", &self.publish)
            .field("subscribe", &self.subscribe)
            .field("admin", &self.admin)
            .finish()
    }
}

/// `allow` and `deny` topic patterns (`*` one token, `>` the rest,
/// `{name}` the principal's name). Deny wins.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Patterns allowed.
    pub allow: Vec<String>,
    /// Patterns denied, even where allowed.
    pub deny: Vec<String>,
}

/// Settings for topics without an override.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    /// Ring size in bytes. Default 4 MiB (must hold a maximum-size message).
    pub ring_bytes: usize,
    /// Create topics on first publish or subscribe. Default true; when
    /// false, only topics created through the admin API (or `[[topics]]`
    /// entries with a `name`) exist and other names get TOPIC_NOT_FOUND.
    pub auto_create: bool,
}

/// A per-topic override: `name` for one topic or `prefix` for a family.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicOverride {
    /// Exact topic name. Such a topic is created at start.
    pub name: Option<String>,
    /// Prefix of topic names (e.g. `metrics.`).
    pub prefix: Option<String>,
    /// Ring size in bytes. Default: `topic_defaults.ring_bytes`.
    pub ring_bytes: Option<usize>,
    /// Largest payload; at most `limits.max_message_bytes`. Default: that.
    pub max_message_bytes: Option<usize>,
}

/// Socket tuning.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// UDP send/receive buffer size requested from the OS (capped by
    /// `net.core.rmem_max`/`wmem_max`; the server logs what it got). The
    /// 208 KiB Linux default drops packets under load. Default 4 MiB.
    pub udp_buffer_bytes: usize,
    /// Threads of the QUIC ingest lane: the endpoint's receive path, the
    /// connections that publish and their publish streams run there, so
    /// that fanout cannot starve publishers (ARCHITECTURE.md, "The ingest
    /// lane"). Default 0: one per CPU core, as many as the runtime the
    /// fanout runs on, so that under full load the OS shares the cores
    /// evenly between the two. At most 64.
    pub ingest_threads: usize,
}

/// Cluster mode: topics served through a NATS JetStream backbone, so that
/// many nodes report the same `{epoch, seq}` for a message and a client can
/// resume on any of them (ARCHITECTURE.md, "Cluster mode"). Off by default:
/// without `url` the server is one node, as always.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackboneConfig {
    /// NATS server URL(s), comma-separated (`nats://host:4222`,
    /// `tls://host:4222`). Empty (the default): no backbone.
    pub url: String,
    /// The topics served through the backbone, as subscribe patterns
    /// (`*` one token, `>` the rest). Default `[">"]`: every topic. A topic
    /// outside these stays local to the node that has it.
    pub topics: Vec<String>,
    /// A NATS credentials file (`.creds`: JWT and nkey seed). Default none.
    pub credentials: Option<PathBuf>,
    /// A NATS token (instead of credentials). Default none.
    pub token: Option<String>,
    /// A CA file (PEM) to verify the NATS servers' TLS certificates with;
    /// setting it requires TLS. Default none (the system roots for `tls://`).
    pub tls_ca: Option<PathBuf>,
    /// The subject a topic's messages are published on is
    /// `<subject_prefix>.<topic>`. Default `lapwing`.
    pub subject_prefix: String,
    /// A topic's stream is named `<stream_prefix><topic, escaped>`.
    /// Default `LAPWING_`.
    pub stream_prefix: String,
    /// Retention of each topic's stream, in messages (the oldest go
    /// first). Default 1 000 000.
    pub max_msgs: i64,
    /// Retention of each topic's stream, in bytes; -1 (the default): no
    /// byte limit, `max_msgs` alone. JetStream *reserves* a stream's byte
    /// limit in full (times its replicas) against its servers' storage
    /// (`max_file_store`) as the stream is created, so a limit caps the
    /// number of topics at that storage divided by it (1 GiB against
    /// 42 GB of store: 41 topics).
    pub max_bytes: i64,
    /// Replicas of each stream (1, 3 or 5 on a JetStream cluster).
    /// Default 1.
    pub replicas: usize,
    /// `file` (survives a backbone restart; the default) or `memory`.
    pub storage: BackboneStorage,
    /// How long a publish waits for the backbone's acknowledgement before
    /// it fails with UNAVAILABLE. Default 5000 ms.
    pub ack_timeout_ms: u64,
}

/// Where the backbone keeps a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneStorage {
    /// On disk: a backbone restart keeps every topic's history and epoch.
    #[default]
    File,
    /// In memory: a backbone restart loses it (a new epoch).
    Memory,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            topics: vec![">".to_owned()],
            credentials: None,
            token: None,
            tls_ca: None,
            subject_prefix: "lapwing".to_owned(),
            stream_prefix: "LAPWING_".to_owned(),
            max_msgs: 1_000_000,
            max_bytes: -1,
            replicas: 1,
            storage: BackboneStorage::File,
            ack_timeout_ms: 5000,
        }
    }
}

impl BackboneConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The patterns of the topics served through the backbone (none when
    /// cluster mode is off; invalid ones are left out, `validate` reports
    /// them).
    pub fn patterns(&self) -> Vec<lapwing_proto::pattern::Pattern> {
        if !self.enabled() {
            return Vec::new();
        }
        self.topics
            .iter()
            .filter_map(|t| lapwing_proto::pattern::Pattern::parse(t).ok())
            .collect()
    }

    fn validate(&self, errors: &mut Vec<ConfigError>) {
        if !self.enabled() {
            return;
        }
        if self.topics.is_empty() {
            errors.push(invalid(
                "backbone.topics",
                "is empty: name at least one pattern (\">\": every topic), or leave backbone.url unset",
            ));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(e) = lapwing_proto::pattern::Pattern::parse(t) {
                errors.push(invalid(format!("backbone.topics[{i}]"), e.to_string()));
            }
        }
        let token_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !self.subject_prefix.split('.').all(token_ok) {
            errors.push(invalid(
                "backbone.subject_prefix",
                "must be dot-separated tokens of letters, digits, `_` and `-`",
            ));
        }
        if !token_ok(&self.stream_prefix) || self.stream_prefix.len() > 32 {
            errors.push(invalid(
                "backbone.stream_prefix",
                "must be 1..=32 letters, digits, `_` and `-`",
            ));
        }
        if self.max_msgs < 1 {
            errors.push(invalid("backbone.max_msgs", "must be at least 1"));
        }
        if self.max_bytes != -1 && self.max_bytes < 1024 {
            errors.push(invalid(
                "backbone.max_bytes",
                "must be -1 (no byte limit) or at least 1024",
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            errors.push(invalid("backbone.replicas", "must be 1..=5"));
        }
        if self.ack_timeout_ms == 0 || self.ack_timeout_ms > 60_000 {
            errors.push(invalid("backbone.ack_timeout_ms", "must be 1..=60000"));
        }
        if self.credentials.is_some() && self.token.is_some() {
            errors.push(invalid(
                "backbone.token",
                "set one of backbone.credentials or backbone.token, not both",
            ));
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After GoAway, how long clients get to go before the connection is
    /// closed with SHUTTING_DOWN. Default 1000 ms.
    pub drain_ms: u64,
    /// Hint to clients in GoAway: wait this long before reconnecting. Default 500 ms.
    pub reconnect_after_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: "lapwing".to_owned(),
            data_dir: lapwing_proto::defaults::default_data_dir(),
            log_format: LogFormat::Human,
            listen: ListenConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            topic_defaults: TopicDefaults::default(),
            topics: Vec::new(),
            principals: Vec::new(),
            transport: TransportConfig::default(),
            shutdown: ShutdownConfig::default(),
            backbone: BackboneConfig::default(),
            source: None,
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        use lapwing_proto::defaults::{GRPC_PORT, HTTP_PORT, QUIC_PORT};
        let lo = std::net::Ipv4Addr::LOCALHOST;
        Self {
            quic: SocketAddr::from((lo, QUIC_PORT)),
            grpc: SocketAddr::from((lo, GRPC_PORT)),
            http: SocketAddr::from((lo, HTTP_PORT)),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS,
            max_topics: DEFAULT_MAX_TOPICS,
            hello_timeout_ms: 10_000,
            ring_memory_bytes: DEFAULT_RING_MEMORY_BYTES,
            topics_created_per_connection: DEFAULT_TOPICS_CREATED_PER_CONNECTION,
            idle_topic_ttl_ms: 300_000,
            handshake_timeout_ms: 10_000,
            frame_timeout_ms: 30_000,
            partial_frame_bytes: DEFAULT_PARTIAL_FRAME_BYTES,
            max_publish_streams_per_connection: DEFAULT_MAX_PUBLISH_STREAMS,
            max_topics_per_wildcard: DEFAULT_MAX_TOPICS_PER_WILDCARD,
        }
    }
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            ring_bytes: DEFAULT_RING_BYTES,
            auto_create: true,
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            udp_buffer_bytes: DEFAULT_UDP_BUFFER_BYTES,
            ingest_threads: 0,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_ms: 1000,
            reconnect_after_ms: 500,
        }
    }
}

/// One configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this struct.
    #[error("config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser's message (names the key and line).
        source: Box<toml::de::Error>,
    },
    /// An environment variable has a value that does not parse.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// A key has a value the server cannot run with.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `limits.max_message_bytes`.
        key: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// What `auth.principals_file` may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PrincipalsFile {
    principals: Vec<PrincipalConfig>,
}

fn read_principals_file(path: &Path) -> Result<Vec<PrincipalConfig>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: PrincipalsFile = toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })?;
    Ok(file.principals)
}

impl Config {
    /// A config for tests: loopback, port 0 everywhere, small rings, a
    /// short drain, certificate generated in `data_dir`.
    pub fn for_tests(data_dir: &Path) -> Config {
        let any = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        Config {
            server_name: "lapwing-test".to_owned(),
            data_dir: data_dir.to_owned(),
            listen: ListenConfig {
                quic: any,
                grpc: any,
                http: any,
            },
            limits: LimitsConfig {
                max_message_bytes: 64 * 1024,
                max_connections: 256,
                max_subscriptions_per_connection: 64,
                max_topics: 10_000,
                hello_timeout_ms: 5_000,
                ..LimitsConfig::default()
            },
            topic_defaults: TopicDefaults {
                ring_bytes: 256 * 1024,
                auto_create: true,
            },
            shutdown: ShutdownConfig {
                drain_ms: 200,
                reconnect_after_ms: 100,
            },
            ..Config::default()
        }
    }

    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.source = Some(path.to_owned());
        if let Some(file) = &config.auth.principals_file {
            let file = path.parent().unwrap_or(Path::new(".")).join(file);
            config.principals.extend(read_principals_file(&file)?);
        }
        Ok(config)
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Applies `LAPWING_*` variables from `vars` (pass `std::env::vars()`),
    /// collecting every unparsable value. Unknown `LAPWING_*` names are
    /// ignored: the client and other tools share the prefix.
    ///
    /// | variable | key |
    /// |---|---|
    /// | `LAPWING_QUIC_LISTEN` | `listen.quic` |
    /// | `LAPWING_GRPC_LISTEN` | `listen.grpc` |
    /// | `LAPWING_HTTP_LISTEN` | `listen.http` |
    /// | `LAPWING_DATA_DIR` | `data_dir` |
    /// | `LAPWING_LOG_FORMAT` | `log_format` |
    /// | `LAPWING_TOKENS` | `auth.tokens` (comma-separated) |
    /// | `LAPWING_TLS_CERT`, `LAPWING_TLS_KEY` | `tls.cert`, `tls.key` |
    /// | `LAPWING_GRPC_TLS` | `tls.grpc` |
    /// | `LAPWING_ADMIN_TOKEN` | `auth.admin_token` |
    /// | `LAPWING_MAX_MESSAGE_BYTES` | `limits.max_message_bytes` |
    /// | `LAPWING_MAX_CONNECTIONS` | `limits.max_connections` |
    /// | `LAPWING_RING_BYTES` | `topic_defaults.ring_bytes` |
    /// | `LAPWING_RING_MEMORY_BYTES` | `limits.ring_memory_bytes` |
    /// | `LAPWING_INGEST_THREADS` | `transport.ingest_threads` |
    /// | `LAPWING_BACKBONE_URL` | `backbone.url` |
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for (var, value) in vars {
            let mut parse = |apply: &mut dyn FnMut(&str) -> Result<(), String>| {
                if let Err(reason) = apply(&value) {
                    errors.push(ConfigError::Env {
                        var: var.clone(),
                        reason,
                    });
                }
            };
            match var.as_str() {
                "LAPWING_QUIC_LISTEN" => parse(&mut |v| set_parsed(&mut self.listen.quic, v)),
                "LAPWING_GRPC_LISTEN" => parse(&mut |v| set_parsed(&mut self.listen.grpc, v)),
                "LAPWING_HTTP_LISTEN" => parse(&mut |v| set_parsed(&mut self.listen.http, v)),
                "LAPWING_DATA_DIR" => self.data_dir = PathBuf::from(&value),
                "LAPWING_LOG_FORMAT" => parse(&mut |v| set_parsed(&mut self.log_format, v)),
                "LAPWING_TOKENS" => {
                    self.auth.tokens = value
                        .split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "LAPWING_TLS_CERT" => self.tls.cert = Some(PathBuf::from(&value)),
                "LAPWING_TLS_KEY" => self.tls.key = Some(PathBuf::from(&value)),
                "LAPWING_GRPC_TLS" => parse(&mut |v| set_parsed(&mut self.tls.grpc, v)),
                "LAPWING_ADMIN_TOKEN" => {
                    self.auth.admin_token = Some(value.trim().to_owned()).filter(|t| !t.is_empty())
                }
                "LAPWING_MAX_MESSAGE_BYTES" => {
                    parse(&mut |v| set_parsed(&mut self.limits.max_message_bytes, v))
                }
                "LAPWING_MAX_CONNECTIONS" => {
                    parse(&mut |v| set_parsed(&mut self.limits.max_connections, v))
                }
                "LAPWING_RING_BYTES" => {
                    parse(&mut |v| set_parsed(&mut self.topic_defaults.ring_bytes, v))
                }
                "LAPWING_INGEST_THREADS" => {
                    parse(&mut |v| set_parsed(&mut self.transport.ingest_threads, v))
                }
                "LAPWING_BACKBONE_URL" => self.backbone.url = value.trim().to_owned(),
                "LAPWING_RING_MEMORY_BYTES" => {
                    parse(&mut |v| set_parsed(&mut self.limits.ring_memory_bytes, v))
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Checks the whole config and returns every problem at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let max_msg = self.limits.max_message_bytes;
        if max_msg == 0 || max_msg > HARD_MAX_MESSAGE_BYTES {
            errors.push(invalid(
                "limits.max_message_bytes",
                format!("{max_msg} is outside 1..={HARD_MAX_MESSAGE_BYTES}"),
            ));
        }
        if self.limits.max_connections == 0 {
            errors.push(invalid("limits.max_connections", "must be at least 1"));
        }
        if self.limits.max_subscriptions_per_connection == 0 {
            errors.push(invalid(
                "limits.max_subscriptions_per_connection",
                "must be at least 1",
            ));
        }
        if self.limits.max_topics == 0 {
            errors.push(invalid("limits.max_topics", "must be at least 1"));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.hello_timeout_ms", l.hello_timeout_ms),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            ("limits.frame_timeout_ms", l.frame_timeout_ms),
            (
                "limits.topics_created_per_connection",
                u64::from(l.topics_created_per_connection),
            ),
            (
                "limits.max_publish_streams_per_connection",
                u64::from(l.max_publish_streams_per_connection),
            ),
            (
                "limits.max_topics_per_wildcard",
                u64::from(l.max_topics_per_wildcard),
            ),
        ] {
            if value == 0 {
                errors.push(invalid(key, "must be at least 1"));
            }
        }
        if l.ring_memory_bytes < self.topic_defaults.ring_bytes {
            errors.push(invalid(
                "limits.ring_memory_bytes",
                format!(
                    "{} is less than one default ring (topic_defaults.ring_bytes = {})",
                    l.ring_memory_bytes, self.topic_defaults.ring_bytes
                ),
            ));
        }
        let frame_max = lapwing_proto::frame_limit_for(max_msg.min(HARD_MAX_MESSAGE_BYTES));
        if l.partial_frame_bytes < frame_max {
            errors.push(invalid(
                "limits.partial_frame_bytes",
                format!(
                    "{} cannot hold one maximum-size frame ({frame_max} bytes)",
                    l.partial_frame_bytes
                ),
            ));
        }
        if self.server_name.is_empty() {
            errors.push(invalid("server_name", "must not be empty"));
        }
        if self.data_dir.as_os_str().is_empty() {
            errors.push(invalid("data_dir", "must not be empty"));
        }
        check_ring(
            &mut errors,
            "topic_defaults.ring_bytes",
            self.topic_defaults.ring_bytes,
            max_msg,
        );
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                errors.push(invalid("tls.key", "tls.cert is set but tls.key is not"))
            }
            (None, Some(_)) => {
                errors.push(invalid("tls.cert", "tls.key is set but tls.cert is not"))
            }
            _ => {}
        }
        if self.auth.admin_token.as_deref() == Some("") {
            errors.push(invalid("auth.admin_token", "must not be empty"));
        }
        for (i, token) in self.auth.tokens.iter().enumerate() {
            if token.is_empty() {
                errors.push(invalid(format!("auth.tokens[{i}]"), "must not be empty"));
            }
        }
        let mut topic_names = std::collections::HashSet::new();
        for (i, t) in self.topics.iter().enumerate() {
            let key = |k: &str| format!("topics[{i}].{k}");
            match (&t.name, &t.prefix) {
                (Some(name), None) => {
                    if let Err(e) = lapwing_proto::topic::validate_topic(name) {
                        errors.push(invalid(key("name"), e.to_string()));
                    } else if !topic_names.insert(name.as_str()) {
                        errors.push(invalid(key("name"), format!("`{name}` is named twice")));
                    }
                }
                (None, Some(prefix)) => {
                    if prefix.is_empty() || prefix.len() > 255 {
                        errors.push(invalid(key("prefix"), "must be 1..=255 bytes"));
                    }
                }
                _ => errors.push(invalid(
                    format!("topics[{i}]"),
                    "needs exactly one of `name` or `prefix`",
                )),
            }
            let msg = t.max_message_bytes.unwrap_or(max_msg);
            if msg == 0 || msg > max_msg {
                errors.push(invalid(
                    key("max_message_bytes"),
                    format!("{msg} is outside 1..=limits.max_message_bytes ({max_msg})"),
                ));
            }
            check_ring(
                &mut errors,
                &key("ring_bytes"),
                t.ring_bytes.unwrap_or(self.topic_defaults.ring_bytes),
                msg.min(max_msg),
            );
        }
        if topic_names.len() > self.limits.max_topics {
            errors.push(invalid(
                "limits.max_topics",
                format!(
                    "{} is fewer than the {} topics named in [[topics]]",
                    self.limits.max_topics,
                    topic_names.len()
                ),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.principals.iter().enumerate() {
            let key = |k: &str| format!("principals[{i}].{k}");
            if p.name.is_empty() {
                errors.push(invalid(key("name"), "must not be empty"));
            } else if !names.insert(p.name.as_str()) {
                errors.push(invalid(key("name"), format!("`{}` is used twice", p.name)));
            }
            match (&p.token_sha256, &p.token, &p.cert_subject) {
                (Some(h), None, _) if crate::auth::parse_hex(h).is_none() => errors.push(invalid(
                    key("token_sha256"),
                    "must be 64 hex digits (`lapwing auth hash` prints it)",
                )),
                (None, Some(t), _) if t.is_empty() => {
                    errors.push(invalid(key("token"), "must not be empty"))
                }
                (Some(_), None, _) | (None, Some(_), _) | (None, None, Some(_)) => {}
                (Some(_), Some(_), _) => errors.push(invalid(
                    format!("principals[{i}]"),
                    "set one of `token_sha256` or `token`, not both",
                )),
                (None, None, None) => errors.push(invalid(
                    format!("principals[{i}]"),
                    "needs exactly one of `token_sha256` or `token`, or a `cert_subject`",
                )),
            }
            if let Some(subject) = &p.cert_subject {
                if subject.is_empty() {
                    errors.push(invalid(key("cert_subject"), "must not be empty"));
                } else if self.tls.client_ca.is_none() {
                    errors.push(invalid(
                        key("cert_subject"),
                        "needs tls.client_ca (the CA that signs client certificates)",
                    ));
                }
            }
            for (action, rules) in [("publish", &p.publish), ("subscribe", &p.subscribe)] {
                for (list, patterns) in [("allow", &rules.allow), ("deny", &rules.deny)] {
                    for (j, pattern) in patterns.iter().enumerate() {
                        let expanded = pattern.replace("{name}", &p.name);
                        if let Err(e) = lapwing_proto::pattern::Pattern::parse(&expanded) {
                            errors.push(invalid(
                                key(&format!("{action}.{list}[{j}]")),
                                e.to_string(),
                            ));
                        }
                    }
                }
            }
        }
        if self.shutdown.drain_ms > 60_000 {
            errors.push(invalid("shutdown.drain_ms", "at most 60000"));
        }
        if self.transport.udp_buffer_bytes < 64 * 1024 {
            errors.push(invalid("transport.udp_buffer_bytes", "at least 65536"));
        }
        if self.transport.ingest_threads > 64 {
            errors.push(invalid("transport.ingest_threads", "at most 64"));
        }
        self.backbone.validate(&mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Time a client has to send Hello.
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.hello_timeout_ms)
    }

    /// How long an auto-created topic may sit idle before it is reaped
    /// (`None`: never).
    pub fn idle_topic_ttl(&self) -> Option<Duration> {
        (self.limits.idle_topic_ttl_ms > 0)
            .then(|| Duration::from_millis(self.limits.idle_topic_ttl_ms))
    }
}

fn set_parsed<T: std::str::FromStr>(slot: &mut T, value: &str) -> Result<(), String>
where
    T::Err: std::fmt::Display,
{
    *slot = value
        .trim()
        .parse()
        .map_err(|e| format!("`{value}`: {e}"))?;
    Ok(())
}

fn check_ring(errors: &mut Vec<ConfigError>, key: &str, ring_bytes: usize, max_message: usize) {
    if ring_bytes < MIN_RING_BYTES {
        errors.push(invalid(
            key,
            format!("{ring_bytes} is below {MIN_RING_BYTES}"),
        ));
        return;
    }
    if let Err(e) = crate::topic::check_ring_config(ring_bytes, max_message) {
        errors.push(invalid(
            key,
            format!(
                "a ring of {ring_bytes} bytes cannot hold messages of {max_message} bytes: {e}"
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.listen.quic.ip().is_loopback());
        assert_eq!(c.listen.quic.port(), 7400);
        assert_eq!(c.listen.grpc.port(), 7401);
        assert_eq!(c.listen.http.port(), 7402);
        Config::for_tests(Path::new("/tmp/x")).validate().unwrap();
    }

    #[test]
    fn validate_reports_every_error_at_once() {
        let mut c = Config::default();
        c.limits.max_message_bytes = 0;
        c.limits.max_connections = 0;
        c.limits.max_subscriptions_per_connection = 0;
        c.transport.ingest_threads = 65;
        c.tls.cert = Some("c.pem".into());
        c.auth.tokens = vec![String::new()];
        c.topics.push(TopicOverride {
            name: Some("bad..name".into()),
            ..Default::default()
        });
        c.topics.push(TopicOverride::default());
        let errs = c.validate().unwrap_err().0;
        let keys: Vec<String> = errs
            .iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key.clone(),
                other => panic!("unexpected {other}"),
            })
            .collect();
        for k in [
            "limits.max_message_bytes",
            "limits.max_connections",
            "limits.max_subscriptions_per_connection",
            "transport.ingest_threads",
            "tls.key",
            "auth.tokens[0]",
            "topics[0].name",
            "topics[1]",
        ] {
            assert!(keys.iter().any(|x| x == k), "missing {k} in {keys:?}");
        }
        let shown = ConfigErrors(errs).to_string();
        assert!(shown.contains("limits.max_connections"), "{shown}");
    }

    #[test]
    fn ring_too_small_for_max_message_is_rejected() {
        let mut c = Config::default();
        c.topic_defaults.ring_bytes = 64 * 1024;
        let errs = c.validate().unwrap_err().0;
        assert!(errs.iter().any(
            |e| matches!(e, ConfigError::Invalid { key, .. } if key == "topic_defaults.ring_bytes")
        ));
    }

    #[test]
    fn toml_file_then_env_then_flags() {
        let c = Config::from_toml(
            r#"
            server_name = "edge-1"
            log_format = "json"
            [listen]
            quic = "0.0.0.0:9000"
            [auth]
            tokens = ["s3cret"]
            [limits]
            max_message_bytes = 4096
            [topic_defaults]
            ring_bytes = 65536
            [[topics]]
            prefix = "metrics."
            ring_bytes = 16384
            max_message_bytes = 1024
            "#,
        )
        .unwrap();
        assert_eq!(c.server_name, "edge-1");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.listen.quic.port(), 9000);
        assert_eq!(c.listen.grpc.port(), 7401, "unset keys keep defaults");
        assert_eq!(c.topics[0].prefix.as_deref(), Some("metrics."));
        c.validate().unwrap();

        let mut c = c;
        c.apply_env([
            (
                "LAPWING_QUIC_LISTEN".to_owned(),
                "127.0.0.1:9100".to_owned(),
            ),
            ("LAPWING_TOKENS".to_owned(), "a, b".to_owned()),
            ("LAPWING_UNRELATED".to_owned(), "x".to_owned()),
        ])
        .unwrap();
        assert_eq!(c.listen.quic.port(), 9100);
        assert_eq!(c.auth.tokens, vec!["a", "b"]);
    }

    #[test]
    fn env_errors_are_collected() {
        let mut c = Config::default();
        let errs = c
            .apply_env([
                ("LAPWING_QUIC_LISTEN".to_owned(), "nope".to_owned()),
                ("LAPWING_MAX_CONNECTIONS".to_owned(), "-1".to_owned()),
                ("LAPWING_LOG_FORMAT".to_owned(), "xml".to_owned()),
            ])
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn example_file_documents_the_defaults() {
        // Derived from the config type itself: every key the defaults
        // serialize must be set in the example, to its default. A new key
        // without an example line fails here. Two exceptions, commented out
        // in the example for a reason: `data_dir` (its default depends on
        // the environment), `topics` and `principals` (examples, not
        // defaults). Keys whose default is "unset" (`tls.cert`,
        // `auth.admin_token`) serialize to nothing and are checked by name
        // in the file's comments instead.
        let text = include_str!("../lapwing.example.toml");
        let example = Config::from_toml(text).unwrap();
        example.validate().unwrap();
        let mut expected = toml::Value::try_from(Config::default()).unwrap();
        let written: toml::Value = toml::from_str(text).unwrap();
        let table = expected.as_table_mut().unwrap();
        table.remove("data_dir");
        table.remove("topics");
        table.remove("principals");
        let mut missing = Vec::new();
        leaves("", &expected, &mut |key, value| {
            let found = key.split('.').try_fold(&written, |v, k| v.get(k));
            if found != Some(value) {
                missing.push(format!("{key} = {value} (example has {found:?})"));
            }
        });
        assert!(
            missing.is_empty(),
            "example config out of step:\n{}",
            missing.join("\n")
        );
        for commented in [
            "# data_dir =",
            "# cert =",
            "# key =",
            "# admin_token =",
            "# [[topics]]",
        ] {
            assert!(text.contains(commented), "example lacks `{commented}`");
        }
    }

    fn leaves(prefix: &str, v: &toml::Value, f: &mut impl FnMut(&str, &toml::Value)) {
        match v.as_table() {
            Some(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaves(&key, v, f);
                }
            }
            None => f(prefix, v),
        }
    }

    #[test]
    fn named_topics_must_be_distinct_and_fit_max_topics() {
        let mut c = Config::for_tests(Path::new("/tmp/unused"));
        let named = |n: &str| TopicOverride {
            name: Some(n.into()),
            ..Default::default()
        };
        c.topics = vec![named("a"), named("a"), named("b")];
        c.limits.max_topics = 1;
        let errors = c.validate().unwrap_err().to_string();
        assert!(
            errors.contains("topics[1].name: `a` is named twice"),
            "{errors}"
        );
        assert!(
            errors.contains("limits.max_topics: 1 is fewer than the 2 topics"),
            "{errors}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[limits]\nmax_mesage_bytes = 1\n").unwrap_err();
        assert!(err.to_string().contains("max_mesage_bytes"), "{err}");
    }

    #[test]
    fn tokens_are_not_printed() {
        let mut c = Config::default();
        c.auth.tokens = vec!["hunter2".into()];
        c.auth.admin_token = Some("admin-hunter3".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter3"));
    }

    #[test]
    fn grpc_tls_and_admin_token_from_env() {
        let mut c = Config::default();
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(!c.tls.grpc.enabled_for(lo) && c.tls.grpc.enabled_for(any));
        c.apply_env([
            ("LAPWING_GRPC_TLS".to_owned(), "on".to_owned()),
            ("LAPWING_ADMIN_TOKEN".to_owned(), "root".to_owned()),
        ])
        .unwrap();
        assert!(c.tls.grpc.enabled_for(lo));
        assert_eq!(c.auth.admin_token.as_deref(), Some("root"));
        assert!(c
            .apply_env([("LAPWING_GRPC_TLS".to_owned(), "maybe".to_owned())])
            .is_err());
        let c = Config::from_toml("[tls]\ngrpc = \"off\"\n[auth]\nadmin_token = \"x\"\n").unwrap();
        assert_eq!(c.tls.grpc, GrpcTls::Off);
        c.validate().unwrap();
    }
}
