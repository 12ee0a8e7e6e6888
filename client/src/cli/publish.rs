//! `lapwing pub`.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt;

use super::{ConnArgs, Io};
use crate::code_name;

/// `lapwing pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    /// Topic to publish to.
    pub topic: String,
    /// The message (omit with --size, --count or --stdin).
    pub message: Option<String>,
    /// Publish this many messages (default 1). Without MESSAGE or --size,
    /// each payload is the message's number: 0, 1, 2, ...
    #[arg(long, conflicts_with = "stdin")]
    pub count: Option<u64>,
    /// Publish generated payloads of this many bytes (the message number, a
    /// space, then dots).
    #[arg(long, value_name = "BYTES", conflicts_with = "message")]
    pub size: Option<usize>,
    /// At most this many messages per second.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// Wait for each message's acknowledgement and print its epoch and seq.
    #[arg(long)]
    pub ack: bool,
    /// Publish one message per line of standard input (without the newline).
    #[arg(long, conflicts_with_all = ["message", "size"])]
    pub stdin: bool,
}

/// The payload of message `i` for `--size`: the number, a space, dots.
pub(crate) fn generated_payload(i: u64, size: usize) -> Bytes {
    let mut p = format!("{i} ").into_bytes();
    p.resize(size, b'.');
    Bytes::from(p)
}

pub(crate) async fn run(conn: &ConnArgs, args: PubArgs, io: &mut Io<'_>) -> anyhow::Result<()> {
    lapwing_proto::validate_topic(&args.topic)
        .with_context(|| format!("invalid topic {:?}", args.topic))?;
    if args.message.is_none() && args.size.is_none() && args.count.is_none() && !args.stdin {
        bail!("nothing to publish: give a MESSAGE, --size BYTES, --count N or --stdin");
    }
    if let Some(rate) = args.rate {
        if !(rate > 0.0 && rate.is_finite()) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    let client = conn.connect().await?;
    let mut errors = client.async_errors();
    let max = client.max_message_bytes();

    let mut next_payload: Box<dyn FnMut(u64) -> anyhow::Result<Option<Bytes>> + Send + '_> =
        if args.stdin {
            let mut lines = match io.input.take() {
                Some(input) => input,
                None => Box::new(std::io::BufReader::new(std::io::stdin())),
            }
            .lines();
            Box::new(move |_| match lines.next() {
                Some(line) => Ok(Some(Bytes::from(line.context("reading stdin")?))),
                None => Ok(None),
            })
        } else {
            let fixed = args.message.clone().map(Bytes::from);
            let size = args.size;
            let count = args.count.unwrap_or(1);
            Box::new(move |i| {
                if i >= count {
                    return Ok(None);
                }
                Ok(Some(match (&fixed, size) {
                    (Some(m), _) => m.clone(),
                    (None, Some(size)) => generated_payload(i, size),
                    // `--count N` alone: numbered messages.
                    (None, None) => Bytes::from(i.to_string()),
                }))
            })
        };

    // Every publish goes on the acknowledged stream, pipelined (up to
    // WINDOW in flight): exiting 0 then means the server has published
    // everything. A fire-and-forget stream could lose its tail when the
    // connection closes before the server has read it (PROTOCOL.md).
    const WINDOW: usize = 1024;
    let interval = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let start = tokio::time::Instant::now();
    let mut inflight = futures::stream::FuturesOrdered::new();
    let mut published = 0u64;
    let mut acked = 0u64;
    let mut print_ack = |ack: Result<crate::PublishAck, crate::ClientError>,
                         acked: &mut u64|
     -> anyhow::Result<()> {
        *acked += 1;
        let ack = ack.with_context(|| format!("publish {acked} failed"))?;
        if args.ack {
            writeln!(io.out, "epoch={} seq={}", ack.epoch, ack.seq)?;
        }
        Ok(())
    };
    while let Some(payload) = next_payload(published)? {
        if payload.len() > max {
            bail!(
                "message {} is {} bytes; the server accepts at most {max} bytes",
                published + 1,
                payload.len()
            );
        }
        // The in-flight publishes make progress only while they are polled:
        // keep collecting acks while pacing, or a `--rate` run would hold
        // every message back until the window fills.
        if let Some(interval) = interval {
            let due = tokio::time::sleep_until(start + interval.mul_f64(published as f64));
            tokio::pin!(due);
            loop {
                tokio::select! {
                    () = &mut due => break,
                    Some(ack) = inflight.next(), if !inflight.is_empty() => {
                        print_ack(ack, &mut acked)?;
                    }
                }
            }
        }
        if inflight.len() >= WINDOW {
            if let Some(ack) = inflight.next().await {
                print_ack(ack, &mut acked)?;
            }
        }
        let client = &client;
        let topic = args.topic.as_str();
        inflight.push_back(async move { client.publish_acked(topic, payload).await });
        published += 1;
    }
    while let Some(ack) = inflight.next().await {
        print_ack(ack, &mut acked)?;
    }
    drop(inflight);
    client.close().await.context("closing the connection")?;
    if let Ok((code, message)) = errors.try_recv() {
        bail!(
            "the server rejected a publish: {}: {message}",
            code_name(code)
        );
    }
    let secs = start.elapsed().as_secs_f64();
    writeln!(
        io.err,
        "published {published} message(s) to {} in {secs:.3} s",
        args.topic
    )?;
    Ok(())
}
