//! `lapwing-server`: config file + `LAPWING_*` environment + flags (flags
//! win), logging, signals; everything else is the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lapwing_server::config::{Config, LogFormat};

/// Lapwing pub/sub message bus server.
///
/// Runs with no configuration at all on loopback: QUIC 127.0.0.1:7400/udp,
/// a self-signed certificate generated in the data directory.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML config file (every key is optional; see deploy/lapwing.toml).
    #[arg(long, env = "LAPWING_CONFIG")]
    config: Option<PathBuf>,
    /// QUIC listen address (UDP) [default: 127.0.0.1:7400].
    #[arg(long)]
    quic_listen: Option<SocketAddr>,
    /// gRPC listen address (TCP: Bus, Admin, health, reflection) [default: 127.0.0.1:7401].
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// HTTP address for /metrics, /healthz, /readyz [default: 127.0.0.1:7402].
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Data directory (generated certificate and key).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format: human or json [default: human].
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Accepted client token (repeatable). Replaces tokens from file and env.
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Ring memory of all topics together, in bytes (limits.ring_memory_bytes)
    /// [default: 1073741824].
    #[arg(long)]
    ring_memory_bytes: Option<usize>,
    /// Cluster mode: the NATS JetStream backbone, e.g. nats://127.0.0.1:4222
    /// (backbone.url; comma-separated for several). Topics in
    /// backbone.topics (default: all) go through it.
    #[arg(long)]
    backbone: Option<String>,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    config.apply_env(std::env::vars())?;
    if let Some(a) = args.quic_listen {
        config.listen.quic = a;
    }
    if let Some(a) = args.grpc_listen {
        config.listen.grpc = a;
    }
    if let Some(a) = args.http_listen {
        config.listen.http = a;
    }
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    if !args.tokens.is_empty() {
        config.auth.tokens = args.tokens.clone();
    }
    if let Some(b) = args.ring_memory_bytes {
        config.limits.ring_memory_bytes = b;
    }
    if let Some(url) = &args.backbone {
        config.backbone.url = url.trim().to_owned();
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in files, pipes
    // and `docker logs` break grep. NO_COLOR (no-color.org) also turns it off.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    return_large_frees();
    let args = Args::parse();
    let config = load(&args)?;
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

/// Makes glibc's malloc serve every allocation of 64 KiB or more (a
/// topic's ring, large frame buffers) from its own mapping and give it back
/// to the OS when freed, and trim the heap's top above 128 KiB free.
///
/// By default glibc raises its mmap threshold each time such a block is
/// freed (up to 32 MiB), so after the first deleted topic or closed
/// connection the next large buffers come from the heap, where topic and
/// connection churn fragments it and RSS creeps up for minutes (the soak's
/// 10-minute run: +10.5 % over minute 2 while the live state was flat).
/// Setting the threshold fixes it and turns that adjustment off. A process
/// setting, so it is the binary's, not the library's (tests embed the
/// server in their own process). Not under musl, which has no mallopt.
fn return_large_frees() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Runs the server until SIGINT/SIGTERM; each SIGHUP reloads the
/// principals from the config file (a broken file keeps the old ones).
async fn serve(config: Config) -> anyhow::Result<()> {
    let handle = lapwing_server::spawn(config)?;
    let mut hangups = lapwing_server::shutdown::Hangups::new();
    let shutdown = lapwing_server::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangups.next() => match handle.reload_principals() {
                Ok(n) => tracing::info!(tokens = n, "SIGHUP: principals reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
            },
        }
    }
    handle.shutdown().await;
    Ok(())
}
