//! `lapwing sub`.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt;

use super::output::write_event;
use super::{ConnArgs, Io, LagPolicyArg};
use crate::{Client, Event, Start, SubscribeOptions};

/// `lapwing sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    /// Topic to subscribe to, or a pattern (`prices.*`: one token;
    /// `prices.>`: the rest) for every matching topic, now and later.
    pub topic: String,
    /// Where to start: `latest` (new messages only), `oldest` (everything
    /// the server still holds) or a number SEQ: the messages AFTER seq SEQ,
    /// in the epoch given by --epoch (default: the topic's current epoch).
    #[arg(long, default_value = "latest", value_name = "latest|oldest|SEQ")]
    pub from: String,
    /// Epoch for `--from SEQ` (as printed by `sub` and `pub --ack`).
    #[arg(long)]
    pub epoch: Option<u64>,
    /// Exit after this many messages (resyncs do not count).
    #[arg(long)]
    pub count: Option<u64>,
    /// What the server does when this subscriber falls a full ring behind.
    #[arg(long, value_enum, default_value_t = LagPolicyArg::ResumeOldest)]
    pub lag_policy: LagPolicyArg,
    /// Read at most this many messages per second (to watch resyncs happen).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub max_rate: Option<f64>,
    /// One JSON object per line instead of human-readable lines.
    #[arg(long)]
    pub json: bool,
}

pub(crate) async fn run(conn: &ConnArgs, args: SubArgs, io: &mut Io<'_>) -> anyhow::Result<()> {
    let pattern = lapwing_proto::pattern::Pattern::parse(&args.topic)
        .with_context(|| format!("invalid topic or pattern {:?}", args.topic))?;
    if let Some(rate) = args.max_rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--max-rate must be a positive number of messages per second");
        }
    }
    let mut cfg = conn.client_config()?;
    if let Some(rate) = args.max_rate {
        // A reader slow on purpose should see a lap soon after it happens
        // and read recent messages after it: buffer about one second of its
        // own pace (a full buffer laps its oldest into a resync), and a
        // 4 KiB stream window, so a stream slower than the topic is lapped
        // by the server's ring rather than queued.
        cfg.subscription_buffer_events = (rate.ceil() as usize).clamp(1, 4096);
        cfg.stream_receive_window = 4 * 1024;
    }
    let client = Client::connect(cfg)
        .await
        .with_context(|| format!("cannot connect to {}", conn.server))?;
    let lag_policy = args.lag_policy.into();
    let start = match args.from.as_str() {
        "latest" => Start::Latest,
        "oldest" => Start::Oldest,
        seq => {
            let seq: u64 = seq.parse().with_context(|| {
                format!("--from must be latest, oldest or a sequence number, not {seq:?}")
            })?;
            if !pattern.is_literal() {
                bail!("--from SEQ names a position in one topic; a pattern starts at latest or oldest");
            }
            let epoch = match args.epoch {
                Some(e) => e,
                None => {
                    // Learn the topic's current epoch from a probe subscription.
                    let probe = client
                        .subscribe(&args.topic, SubscribeOptions::default())
                        .await
                        .context("subscribe failed")?;
                    let (epoch, _) = probe
                        .started_at()
                        .context("server did not report the topic's epoch")?;
                    epoch
                }
            };
            Start::After { epoch, seq }
        }
    };
    if args.epoch.is_some() && !matches!(start, Start::After { .. }) {
        bail!("--epoch only goes with --from SEQ");
    }
    let mut sub = client
        .subscribe(&args.topic, SubscribeOptions { start, lag_policy })
        .await
        .with_context(|| format!("cannot subscribe to {}", args.topic))?;
    match sub.started_at() {
        Some(_) if !pattern.is_literal() => writeln!(
            io.err,
            "subscribed to every topic matching {} (each announced as it joins)",
            args.topic
        )?,
        Some((epoch, seq)) => writeln!(
            io.err,
            "subscribed to {} (epoch {epoch}, first seq {seq})",
            args.topic
        )?,
        None => {}
    }
    let pace = args.max_rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let started = tokio::time::Instant::now();
    let mut messages = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        let event = match sub.next().await {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(e).context("subscription ended"),
            None => bail!("subscription ended"),
        };
        write_event(io.out, &event, args.json, io.color)?;
        if let Event::Message { .. } = event {
            messages += 1;
            if Some(messages) == args.count {
                io.out.flush()?;
                return Ok(());
            }
            if let Some(pace) = pace {
                tokio::time::sleep_until(started + pace.mul_f64(messages as f64)).await;
            }
        }
    }
}
