//! The soak's subscribers, on both edges, and their accounting.
//!
//! Every subscription keeps a [`Ledger`]: each event must continue exactly
//! where the previous one ended (a message at the next seq, or a resync
//! whose `resume_seq` is the next seq plus `missed`). A message past the
//! next seq without a resync is **silent loss**; one before it is a
//! duplicate or a reordering. At the end every subscription reads up to
//! the topic's head, so what was published while it lived is covered:
//! `delivered + announced missed == seqs passed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapwing_client::{
    BufferOverflow, Client, ClientConfig, Event, ResyncReason, SubscribeOptions, Trust,
};
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{delivery, Delivery, SubscribeRequest};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What every subscription adds to, as it goes.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) delivered: AtomicU64,
    pub(crate) missed: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) silent: AtomicU64,
    pub(crate) disorder: AtomicU64,
    /// Subscriptions that ended with an error (not by the soak's churn).
    pub(crate) errors: AtomicU64,
    /// Subscriptions that did not reach their topic's head at the end.
    pub(crate) unfinished: AtomicU64,
    /// Subscriptions retired (by churn or at the end) with their accounting
    /// checked.
    pub(crate) retired: AtomicU64,
}

impl Totals {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One subscription's view; see the module docs.
#[derive(Debug, Default)]
struct Ledger {
    epoch: Option<u64>,
    start: Option<u64>,
    next: Option<u64>,
    delivered: u64,
    missed: u64,
}

impl Ledger {
    fn message(&mut self, epoch: u64, seq: u64, t: &Totals) {
        match (self.next, self.epoch) {
            (Some(next), Some(e)) if e == epoch => {
                if seq < next {
                    Totals::add(&t.disorder, 1);
                    return;
                }
                if seq > next {
                    Totals::add(&t.silent, seq - next);
                    self.missed += seq - next;
                }
            }
            (Some(_), Some(_)) => {
                // A new epoch without EPOCH_CHANGED: whatever came before
                // its seq is unaccounted for.
                Totals::add(&t.silent, seq);
                self.epoch = Some(epoch);
                self.start = Some(0);
                self.missed += seq;
            }
            _ => {
                self.epoch = Some(epoch);
                self.start = Some(seq);
            }
        }
        self.delivered += 1;
        self.next = Some(seq + 1);
        Totals::add(&t.delivered, 1);
    }

    fn resync(&mut self, epoch: u64, missed: u64, resume_seq: u64, changed: bool, t: &Totals) {
        Totals::add(&t.resyncs, 1);
        Totals::add(&t.missed, missed);
        self.missed += missed;
        match self.next {
            Some(next) if !changed && Some(epoch) == self.epoch => {
                if resume_seq != next + missed {
                    // A resync that does not add up hides a gap (counted
                    // once, here: the window is made whole again).
                    Totals::add(&t.silent, resume_seq.abs_diff(next + missed));
                    let start = self.start.unwrap_or(0);
                    self.missed =
                        (resume_seq - start.min(resume_seq)).saturating_sub(self.delivered);
                }
            }
            _ => {
                self.epoch = Some(epoch);
                self.start = Some(resume_seq - missed.min(resume_seq));
            }
        }
        self.next = Some(resume_seq);
    }

    /// A (re)join: the first position, or after a reconnect the seq the
    /// topic continues from, which must be the next one (a resync would
    /// follow for anything in between).
    fn joined(&mut self, epoch: u64, start_seq: u64, t: &Totals) {
        match self.next {
            None => {
                self.epoch = Some(epoch);
                self.start = Some(start_seq);
                self.next = Some(start_seq);
            }
            Some(next) if self.epoch == Some(epoch) && start_seq > next => {
                Totals::add(&t.silent, start_seq - next);
                self.missed += start_seq - next;
                self.next = Some(start_seq);
            }
            Some(_) => {}
        }
    }

    /// At retirement: the counts cover the window exactly (they do by
    /// construction unless an event was out of order).
    fn retire(&self, head: Option<u64>, t: &Totals) {
        Totals::add(&t.retired, 1);
        if let (Some(start), Some(next)) = (self.start, self.next) {
            if self.delivered + self.missed != next - start {
                Totals::add(
                    &t.silent,
                    (next - start).abs_diff(self.delivered + self.missed),
                );
            }
        }
        if let Some(head) = head {
            if self.next.unwrap_or(head) < head {
                Totals::add(&t.unfinished, 1);
            }
        }
    }
}

/// How a subscription task is told to stop: `stop` (churn: leave now), or
/// `finish` with each topic's head (the run is over: read up to it, at
/// full speed, then stop).
#[derive(Clone)]
pub(crate) struct Control {
    pub(crate) stop: CancellationToken,
    pub(crate) finish: watch::Receiver<Option<Arc<HashMap<String, u64>>>>,
}

/// How long a slow subscriber takes per event while the run is on.
const SLOW_PACE: Duration = Duration::from_millis(100);

/// One event, as both edges deliver it.
enum Got {
    Message {
        epoch: u64,
        seq: u64,
    },
    Resync {
        epoch: u64,
        missed: u64,
        resume_seq: u64,
        changed: bool,
    },
    /// Where a topic's events start (wildcard subscriptions announce it;
    /// a single-topic one learns it from its SubscribeOk).
    Joined {
        epoch: u64,
        start_seq: u64,
    },
    Ended(String),
}

/// Reads events from `next` into a ledger until `ctl` says to stop;
/// `start` is where the server said the subscription starts.
async fn account(
    topic: String,
    start: Option<(u64, u64)>,
    slow: bool,
    ctl: Control,
    totals: Arc<Totals>,
    mut events: impl futures::Stream<Item = Got> + Unpin,
) {
    let mut ledger = Ledger {
        epoch: start.map(|s| s.0),
        start: start.map(|s| s.1),
        next: start.map(|s| s.1),
        ..Ledger::default()
    };
    let mut finish = ctl.finish.clone();
    let mut heads: Option<Arc<HashMap<String, u64>>> = finish.borrow().clone();
    loop {
        let head = heads.as_ref().and_then(|h| h.get(&topic).copied());
        if let Some(head) = head {
            if ledger.next.is_some_and(|n| n >= head) || head == 0 {
                break;
            }
        }
        if slow && heads.is_none() {
            tokio::select! {
                _ = tokio::time::sleep(SLOW_PACE) => {}
                _ = ctl.stop.cancelled() => break,
                _ = finish.changed() => {
                    heads = finish.borrow().clone();
                    continue;
                }
            }
        }
        let got = tokio::select! {
            got = events.next() => got.unwrap_or_else(|| Got::Ended("stream ended".into())),
            _ = ctl.stop.cancelled() => break,
            changed = finish.changed(), if heads.is_none() => {
                if changed.is_ok() {
                    heads = finish.borrow().clone();
                }
                continue;
            }
        };
        match got {
            Got::Message { epoch, seq } => ledger.message(epoch, seq, &totals),
            Got::Resync {
                epoch,
                missed,
                resume_seq,
                changed,
            } => ledger.resync(epoch, missed, resume_seq, changed, &totals),
            Got::Joined { epoch, start_seq } => ledger.joined(epoch, start_seq, &totals),
            Got::Ended(why) => {
                eprintln!("soak: a subscription on {topic} ended: {why}");
                Totals::add(&totals.errors, 1);
                break;
            }
        }
    }
    let head = heads.as_ref().and_then(|h| h.get(&topic).copied());
    ledger.retire(head, &totals);
}

/// A QUIC client holding one subscription per topic in `topics`, each read
/// by its own task; ends (and closes the client) when `ctl` says so. A slow
/// one (`slow` says how its full buffer overflows) reads 10 events/s.
pub(crate) async fn quic_client(
    quic: String,
    cert: std::path::PathBuf,
    name: String,
    topics: Vec<String>,
    slow: Option<BufferOverflow>,
    ctl: Control,
    totals: Arc<Totals>,
) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new(quic, Trust::CaFile(cert));
    cfg.client_name = name;
    if let Some(overflow) = slow {
        // Little room on the client: it laps its own buffer, or (pushing
        // back) the server's ring is where it lags.
        cfg.subscription_buffer_events = 32;
        cfg.stream_receive_window = 32 * 1024;
        cfg.buffer_overflow = overflow;
    }
    let slow = slow.is_some();
    let client = Client::connect(cfg).await?;
    let mut tasks = JoinSet::new();
    for topic in topics {
        let sub = client
            .subscribe(&topic, SubscribeOptions::default())
            .await?;
        let (ctl, totals) = (ctl.clone(), totals.clone());
        let start = sub.started_at();
        tasks.spawn(async move {
            let events = sub.map(|e| match e {
                Ok(Event::Message { epoch, seq, .. }) => Got::Message { epoch, seq },
                Ok(Event::Resync {
                    epoch,
                    missed,
                    resume_seq,
                    reason,
                    ..
                }) => Got::Resync {
                    epoch,
                    missed,
                    resume_seq,
                    changed: reason == ResyncReason::EpochChanged,
                },
                Ok(Event::Joined {
                    epoch, start_seq, ..
                }) => Got::Joined { epoch, start_seq },
                // A topic leaving (wildcards) or anything newer: not
                // expected on a single-topic subscription.
                Ok(other) => Got::Ended(format!("unexpected event {other:?}")),
                Err(e) => Got::Ended(e.to_string()),
            });
            account(topic, start, slow, ctl, totals, events).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close()).await;
    Ok(())
}

/// A gRPC connection (its own HTTP/2 channel) with one Subscribe call per
/// topic in `topics`.
pub(crate) async fn grpc_client(
    grpc: std::net::SocketAddr,
    topics: Vec<String>,
    slow: bool,
    ctl: Control,
    totals: Arc<Totals>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut tasks = JoinSet::new();
    for topic in topics {
        let mut bus = BusClient::new(channel.clone());
        let response = bus
            .subscribe(SubscribeRequest {
                topic: topic.clone(),
                ..Default::default()
            })
            .await?;
        // The server answers a Subscribe with where it starts.
        let md = |key: &str| {
            response
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let start = md("lapwing-epoch").zip(md("lapwing-start-seq"));
        let stream = response.into_inner();
        let (ctl, totals) = (ctl.clone(), totals.clone());
        tasks.spawn(async move {
            let _bus = bus;
            let events = stream.map(|d| match d {
                Ok(Delivery {
                    kind: Some(delivery::Kind::Message(m)),
                }) => Got::Message {
                    epoch: m.epoch,
                    seq: m.seq,
                },
                Ok(Delivery {
                    kind: Some(delivery::Kind::Resync(r)),
                }) => Got::Resync {
                    epoch: r.epoch,
                    missed: r.missed,
                    resume_seq: r.resume_seq,
                    changed: r.reason() == lapwing_proto::v1::ResyncReason::EpochChanged,
                },
                Ok(Delivery {
                    kind: Some(delivery::Kind::Joined(j)),
                }) => Got::Joined {
                    epoch: j.epoch,
                    start_seq: j.start_seq,
                },
                Ok(Delivery { kind: None }) => Got::Ended("empty delivery".into()),
                Ok(other) => Got::Ended(format!("unexpected delivery {other:?}")),
                Err(status) => Got::Ended(format!("{status}")),
            });
            account(topic, start, slow, ctl, totals, events).await;
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_without_a_resync_are_silent_and_resyncs_add_up() {
        let t = Totals::default();
        let mut l = Ledger::default();
        l.message(1, 10, &t);
        l.message(1, 11, &t);
        l.resync(1, 5, 17, false, &t);
        l.message(1, 17, &t);
        assert_eq!(Totals::get(&t.silent), 0);
        l.message(1, 20, &t);
        assert_eq!(
            Totals::get(&t.silent),
            2,
            "18 and 19 went missing unannounced"
        );
        l.message(1, 20, &t);
        assert_eq!(Totals::get(&t.disorder), 1, "a duplicate");
        l.resync(1, 1, 30, false, &t);
        assert_eq!(
            Totals::get(&t.silent),
            2 + 8,
            "a resync that does not add up"
        );
        l.retire(Some(31), &t);
        assert_eq!(Totals::get(&t.unfinished), 1, "seq 30 never came");
    }

    #[test]
    fn a_join_sets_the_start_and_a_rejoin_past_the_next_seq_is_a_gap() {
        let t = Totals::default();
        let mut l = Ledger::default();
        l.joined(3, 40, &t);
        l.message(3, 40, &t);
        l.joined(3, 41, &t);
        l.message(3, 41, &t);
        assert_eq!(Totals::get(&t.silent), 0);
        l.joined(3, 45, &t);
        assert_eq!(
            Totals::get(&t.silent),
            3,
            "42..=44 skipped without a resync"
        );
        l.message(3, 45, &t);
        l.retire(Some(46), &t);
        assert_eq!(Totals::get(&t.silent), 3, "counted once");
        assert_eq!(Totals::get(&t.unfinished), 0);
    }
}
