//! The delivery contract on a bad network: every subscriber behind its own
//! lossy, duplicating, reordering relay (`lapwing_e2e::relay`), and the
//! publisher behind one too. For every subscriber, delivered + announced
//! missed covers exactly what was published, with no duplicate and no
//! reordering (`support::Ledger` checks each event as it arrives).
//!
//! CI runs a short version; `LAPWING_LONG=1` the full one (20 s at
//! 2 000 msgs/s).

mod support;

use std::time::Duration;

use lapwing_client::{Client, Start, SubscribeOptions};
use lapwing_e2e::relay::{Faults, Relay};
use support::{bounded, client_config, server, Ledger};

const TOPIC: &str = "faults.steady";

fn long() -> bool {
    std::env::var("LAPWING_LONG").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_percent_loss_with_reordering_keeps_every_subscriber_exact() {
    let (subscribers, seconds, rate) = if long() {
        (10, 20, 2_000)
    } else {
        (4, 3, 1_000)
    };
    let (srv, _dir) = server(|c| c.topic_defaults.ring_bytes = 4 * 1024 * 1024);
    let faults = |seed| Faults {
        drop: 0.05,
        duplicate: 0.01,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(15),
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(2),
        seed,
    };
    // Each client gets its own relay: a relay forwards for one client.
    let mut relays = Vec::new();
    let connect = |seed: u64| {
        let srv_addr = srv.quic_addr();
        let cfg_template = client_config(&srv);
        async move {
            let relay = Relay::start(srv_addr, faults(seed)).await.unwrap();
            let mut cfg = cfg_template;
            cfg.server = relay.addr().to_string();
            let client = bounded("connect through the relay", Client::connect(cfg))
                .await
                .expect("connects despite the faults");
            (relay, client)
        }
    };
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let (relay, client) = connect(100 + i).await;
        let options = SubscribeOptions {
            start: Start::Oldest,
            ..SubscribeOptions::default()
        };
        let sub = bounded("subscribe", client.subscribe(TOPIC, options))
            .await
            .unwrap();
        relays.push(relay);
        subs.push((client, sub));
    }
    let (relay, publisher) = connect(7).await;
    relays.push(relay);

    // Fire-and-forget at a steady rate on one stream (QUIC retransmits
    // what the relay drops); the topic is fresh, so the seqs are
    // 0..total and every subscriber must account for all of them.
    let total = seconds * rate;
    let stream = publisher.publisher();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let per_tick = rate / 100;
    let mut sent = 0;
    while sent < total {
        ticker.tick().await;
        for _ in 0..per_tick.min(total - sent) {
            bounded("publish", stream.publish(TOPIC, sent.to_string()))
                .await
                .expect("queued");
            sent += 1;
        }
    }
    bounded("finish", stream.finish())
        .await
        .expect("every publish reached the server");
    let last = total - 1;

    let mut missed_total = 0;
    for (i, (_client, sub)) in subs.iter_mut().enumerate() {
        let mut ledger = Ledger::default();
        bounded("subscriber catches up", ledger.follow_until(sub, last)).await;
        ledger.assert_accounting();
        assert_eq!(
            ledger.start,
            Some(0),
            "subscriber {i} started at the oldest"
        );
        assert_eq!(ledger.window(), total, "subscriber {i} covered every seq");
        missed_total += ledger.missed;
    }
    let dropped: u64 = relays
        .iter()
        .map(|r| r.stats().dropped.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(dropped > 0, "the relays dropped datagrams");
    eprintln!(
        "{subscribers} subscribers x {total} messages through 5 % loss: {dropped} datagrams dropped, \
         {missed_total} messages announced missed, 0 silent"
    );
    srv.shutdown().await;
}

/// How soon after a partition heals delivery must resume: the client's
/// liveness check (a Ping unanswered for `liveness_timeout`, 2 s by
/// default) ends the stalled connection during the partition, and its short
/// reconnect attempts find the healed path (quinn alone, probing with
/// exponential backoff, resumed about 7.6 s after a 5 s partition healed).
const RESUME_BOUND: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_without_loss_and_delivery_resumes_within_two_seconds() {
    let partition = Duration::from_secs(5);
    let (srv, _dir) = server(|c| c.topic_defaults.ring_bytes = 4 * 1024 * 1024);
    let relay = Relay::start(srv.quic_addr(), Faults::none()).await.unwrap();
    let mut cfg = client_config(&srv);
    cfg.server = relay.addr().to_string();
    assert_eq!(
        cfg.liveness_timeout,
        Some(Duration::from_secs(2)),
        "the default is what is tested"
    );
    let subscriber = bounded("connect", Client::connect(cfg)).await.unwrap();
    let options = SubscribeOptions {
        start: Start::Oldest,
        ..SubscribeOptions::default()
    };
    let mut sub = bounded(
        "subscribe",
        subscriber.subscribe("faults.partition", options),
    )
    .await
    .unwrap();
    // The publisher is not behind the relay: publishing goes on.
    let publisher = support::connect(&srv).await;
    let publish_for = |n: u64, from: u64| {
        let publisher = &publisher;
        async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(10));
            for i in from..from + n {
                ticker.tick().await;
                publisher
                    .publish_acked("faults.partition", i.to_string())
                    .await
                    .unwrap();
            }
        }
    };
    let mut ledger = Ledger::default();
    publish_for(50, 0).await;
    bounded("before", ledger.follow_until(&mut sub, 49)).await;
    relay.partition();
    publish_for(partition.as_millis() as u64 / 10, 50).await;
    relay.heal();
    let healed = tokio::time::Instant::now();
    let sent = 50 + partition.as_millis() as u64 / 10;
    let first = bounded(
        "first event after the heal",
        futures::StreamExt::next(&mut sub),
    )
    .await
    .expect("open")
    .expect("no error");
    let resumed_after = healed.elapsed();
    ledger.record(&first);
    publish_for(20, sent).await;
    bounded("after", ledger.follow_until(&mut sub, sent + 19)).await;
    ledger.assert_accounting();
    assert_eq!(
        (ledger.delivered, ledger.missed),
        (sent + 20, 0),
        "the ring held the partition's messages: every one arrives"
    );
    assert!(
        resumed_after <= RESUME_BOUND,
        "delivery resumed {resumed_after:?} after the path healed (bound {RESUME_BOUND:?})"
    );
    eprintln!(
        "partition of {partition:?}: delivery resumed {resumed_after:?} after the heal; \
         {} delivered, {} announced missed",
        ledger.delivered, ledger.missed
    );
    srv.shutdown().await;
}
