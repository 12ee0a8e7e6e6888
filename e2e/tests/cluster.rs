//! Cluster mode end to end: Lapwing nodes over a `nats-server -js`
//! backbone started by the test, on loopback.
//!
//! - three nodes report the same `{epoch, seq}` and payload for every
//!   message, wherever it was published;
//! - a resume older than a node's ring is replayed from the backbone, and
//!   only what the backbone no longer retains is a `NOT_RETAINED` resync,
//!   exact;
//! - a subscriber's node is SIGKILLed mid-stream and the client fails over
//!   to another node: every message delivered once, none silently lost;
//! - the backbone is killed and restarted: publishes fail with a retryable
//!   UNAVAILABLE while it is down, `/readyz` says so, and afterwards the
//!   seqs go on in the same epoch with nothing lost;
//! - a topic outside `backbone.topics` stays local to its node.

#[path = "abuse/kit.rs"]
mod kit;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use lapwing_client::{
    Client, ClientConfig, ClientError, Event, PublishAck, ResyncReason, Start, SubscribeOptions,
    Subscription, Trust,
};
use lapwing_e2e::nats::{self, Nats};
use lapwing_proto::v1::ErrorCode;
use lapwing_server::ServerHandle;
use support::{bounded, http_get, next_event, server_in, Ledger};

/// The topics these tests send through the backbone.
const CLUSTER_TOPICS: &str = "c.>";

struct Cluster {
    nats: Nats,
    nodes: Vec<ServerHandle>,
    /// The certificate and key every node presents (the first node's).
    cert: PathBuf,
    key: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// A backbone and `n` nodes; `tweak` adjusts every node's config.
    async fn start(n: usize, tweak: impl Fn(&mut lapwing_server::Config)) -> Cluster {
        let nats_dir = tempfile::tempdir().expect("tempdir");
        let nats = Nats::start(nats_dir.path());
        let mut dirs = vec![nats_dir];
        let mut nodes: Vec<ServerHandle> = Vec::new();
        let mut shared: Option<(PathBuf, PathBuf)> = None;
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("tempdir");
            let node = server_in(dir.path(), |c| {
                c.backbone.url = nats.url();
                c.backbone.topics = vec![CLUSTER_TOPICS.to_owned()];
                if let Some((cert, key)) = &shared {
                    c.tls.cert = Some(cert.clone());
                    c.tls.key = Some(key.clone());
                }
                tweak(c);
            });
            if shared.is_none() {
                let cert = node.cert_pem_path().to_owned();
                let key = cert.with_file_name("key.pem");
                shared = Some((cert, key));
            }
            nodes.push(node);
            dirs.push(dir);
        }
        let (cert, key) = shared.expect("at least one node");
        let cluster = Cluster {
            nats,
            nodes,
            cert,
            key,
            _dirs: dirs,
        };
        cluster.until_ready().await;
        cluster
    }

    /// Waits until every node reports ready (the backbone reached).
    async fn until_ready(&self) {
        bounded("every node ready", async {
            while !self.nodes.iter().all(ServerHandle::is_ready) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    fn config(&self, servers: &[usize]) -> ClientConfig {
        let list: Vec<String> = servers
            .iter()
            .map(|&i| self.nodes[i].quic_addr().to_string())
            .collect();
        ClientConfig::new(list.join(","), Trust::CaFile(self.cert.clone()))
    }

    async fn client(&self, node: usize) -> Client {
        bounded("connect", Client::connect(self.config(&[node])))
            .await
            .expect("client connects")
    }
}

/// Subscribes to `topic` through `c`, bounded.
async fn subscribe(c: &Client, topic: &str, options: SubscribeOptions) -> Subscription {
    bounded("subscribe", c.subscribe(topic, options))
        .await
        .expect("subscribe")
}

/// Publishes through `c` and waits for the `{epoch, seq}`, bounded.
async fn publish(c: &Client, topic: &str, payload: impl Into<bytes::Bytes>) -> PublishAck {
    bounded("publish", c.publish_acked(topic, payload))
        .await
        .expect("acked publish through the backbone")
}

/// Waits until the node whose HTTP listener is `http` reports ready.
async fn until_ready(http: std::net::SocketAddr) {
    bounded("the node is ready", async {
        while http_get(http, "/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn after(epoch: u64, seq: u64) -> SubscribeOptions {
    SubscribeOptions {
        start: Start::After { epoch, seq },
        ..SubscribeOptions::default()
    }
}

/// Reads `sub` until seq `last` is covered, checking the contract.
async fn follow(sub: &mut lapwing_client::Subscription, ledger: &mut Ledger, last: u64) {
    ledger.follow_until(sub, last).await;
    ledger.assert_accounting();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_report_the_same_seqs() {
    if !nats::available("three_nodes_report_the_same_seqs") {
        return;
    }
    let cluster = Cluster::start(3, |_| {}).await;
    let clients = [
        cluster.client(0).await,
        cluster.client(1).await,
        cluster.client(2).await,
    ];
    let mut subs = Vec::new();
    for c in &clients {
        subs.push(subscribe(c, "c.same", SubscribeOptions::default()).await);
    }
    const N: u64 = 300;
    let mut acks = Vec::new();
    for i in 0..N {
        let via = &clients[(i % 3) as usize];
        let ack = publish(via, "c.same", format!("m{i}")).await;
        acks.push(ack);
    }
    let epoch = acks[0].epoch;
    let first = acks[0].seq;
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(ack.epoch, epoch, "one epoch for the topic");
        assert_eq!(ack.seq, first + i as u64, "acked seqs are contiguous");
    }
    for (node, sub) in subs.iter_mut().enumerate() {
        for (i, ack) in acks.iter().enumerate() {
            match next_event(sub).await {
                Event::Message {
                    epoch: e,
                    seq,
                    payload,
                    ..
                } => {
                    assert_eq!(
                        (e, seq, payload.as_ref()),
                        (ack.epoch, ack.seq, format!("m{i}").as_bytes()),
                        "node {node}: message {i}"
                    );
                }
                other => panic!("node {node}: expected message {i}, got {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_ring_is_replayed_from_the_backbone() {
    if !nats::available("a_resume_older_than_the_ring_is_replayed_from_the_backbone") {
        return;
    }
    // Rings of 16 KiB hold a few dozen of these messages; the backbone
    // holds them all.
    let cluster = Cluster::start(2, |c| {
        c.topic_defaults.ring_bytes = 16 * 1024;
        c.limits.max_message_bytes = 1024;
    })
    .await;
    let a = cluster.client(0).await;
    // A subscriber on node 0 makes it follow the topic from seq 0.
    let mut live = subscribe(&a, "c.replay", SubscribeOptions::default()).await;
    const N: u64 = 500;
    let mut epoch = 0;
    for i in 0..N {
        let ack = publish(&a, "c.replay", vec![i as u8; 100]).await;
        assert_eq!(ack.seq, i);
        epoch = ack.epoch;
    }
    let mut ledger = Ledger::default();
    follow(&mut live, &mut ledger, N - 1).await;
    // On the node whose ring lapped it long ago, and on the node that
    // never followed the topic: everything after seq 9, from the backbone
    // and then the ring, no resync.
    for node in [0, 1] {
        let c = cluster.client(node).await;
        let mut sub = bounded("resume", c.subscribe("c.replay", after(epoch, 9)))
            .await
            .expect("resume");
        let mut ledger = Ledger::starting_at(epoch, 10);
        follow(&mut sub, &mut ledger, N - 1).await;
        assert_eq!(
            ledger.delivered,
            N - 10,
            "node {node}: every message after 9"
        );
        assert!(
            ledger.resyncs.is_empty(),
            "node {node}: {:?}",
            ledger.resyncs
        );
        // And it goes on live.
        let ack = publish(&c, "c.replay", "live").await;
        follow(&mut sub, &mut ledger, ack.seq).await;
        assert_eq!(ledger.seqs.last(), Some(&ack.seq));
        // The operator sees it too.
        let (_, text) = http_get(cluster.nodes[node].http_addr(), "/metrics").await;
        let metric = |name| lapwing_proto::exposition::sum(&text, name);
        assert_eq!(metric("lapwing_backbone_up"), 1.0, "{text}");
        assert!(metric("lapwing_backbone_replays_total") >= 1.0, "{text}");
        assert!(metric("lapwing_backbone_fed_total") >= 1.0, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_backbone_dropped_is_not_retained() {
    if !nats::available("only_what_the_backbone_dropped_is_not_retained") {
        return;
    }
    // The stream keeps the last 100 messages.
    let cluster = Cluster::start(2, |c| c.backbone.max_msgs = 100).await;
    let a = cluster.client(0).await;
    const N: u64 = 300;
    let mut epoch = 0;
    for i in 0..N {
        epoch = publish(&a, "c.kept", format!("m{i}")).await.epoch;
    }
    let b = cluster.client(1).await;
    let mut sub = bounded("resume", b.subscribe("c.kept", after(epoch, 9)))
        .await
        .expect("resume");
    let mut ledger = Ledger::starting_at(epoch, 10);
    follow(&mut sub, &mut ledger, N - 1).await;
    match ledger.resyncs.as_slice() {
        [Event::Resync {
            missed,
            resume_seq,
            reason,
            ..
        }] => {
            assert_eq!(*reason, ResyncReason::NotRetained);
            assert_eq!((*missed, *resume_seq), (N - 100 - 10, N - 100));
        }
        other => panic!("expected one NOT_RETAINED resync, got {other:?}"),
    }
    assert_eq!(ledger.delivered, 100);
    // `oldest` is the backbone's oldest, on a node that never had it.
    let mut sub = bounded(
        "subscribe at oldest",
        b.subscribe(
            "c.kept",
            SubscribeOptions {
                start: Start::Oldest,
                ..SubscribeOptions::default()
            },
        ),
    )
    .await
    .expect("subscribe");
    let mut ledger = Ledger::starting_at(epoch, N - 100);
    follow(&mut sub, &mut ledger, N - 1).await;
    assert_eq!((ledger.delivered, ledger.missed), (100, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_fails_over_when_its_node_is_killed() {
    if !nats::available("a_subscriber_fails_over_when_its_node_is_killed") {
        return;
    }
    // Node 1 is in this process; node 0 is a process the test SIGKILLs,
    // presenting node 1's certificate, so one client trusts both.
    let cluster = Cluster::start(1, |_| {}).await;
    let victim = kit::ServerProcess::start(
        &kit::Spec::new()
            .env("LAPWING_BACKBONE_URL", cluster.nats.url())
            .env("LAPWING_TLS_CERT", cluster.cert.display())
            .env("LAPWING_TLS_KEY", cluster.key.display()),
    );
    until_ready(victim.http).await;
    let survivor = cluster.nodes[0].quic_addr();
    let mut cfg = ClientConfig::new(
        format!("{},{survivor}", victim.quic),
        Trust::CaFile(cluster.cert.clone()),
    );
    cfg.client_name = "failover".into();
    let subscriber = bounded("connect", Client::connect(cfg))
        .await
        .expect("connects to the first node");
    let mut sub = subscribe(&subscriber, "c.failover", SubscribeOptions::default()).await;
    let publisher = cluster.client(0).await;
    const N: u64 = 3000;
    let publishing = tokio::spawn(async move {
        let mut last = None;
        for i in 0..N {
            let ack = publish(&publisher, "c.failover", format!("m{i}")).await;
            last = Some(ack);
        }
        last.expect("published")
    });
    let mut ledger = Ledger::default();
    // Some messages through the first node, then it dies mid-stream.
    while ledger.delivered < 200 {
        let event = next_event(&mut sub).await;
        ledger.record(&event);
    }
    victim.kill();
    let last = bounded("publishing", publishing).await.expect("publisher");
    follow(&mut sub, &mut ledger, last.seq).await;
    assert_eq!(ledger.epoch, Some(last.epoch));
    assert_eq!(
        ledger.missed, 0,
        "the backbone retains everything: nothing may be missed ({:?})",
        ledger.resyncs
    );
    assert_eq!(ledger.delivered, ledger.window());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backbone_restart_loses_nothing_and_publishes_fail_while_it_is_down() {
    if !nats::available("a_backbone_restart_loses_nothing_and_publishes_fail_while_it_is_down") {
        return;
    }
    let mut cluster = Cluster::start(1, |_| {}).await;
    let c = cluster.client(0).await;
    let mut sub = subscribe(&c, "c.restart", SubscribeOptions::default()).await;
    let mut epoch = 0;
    for i in 0..100 {
        epoch = publish(&c, "c.restart", format!("a{i}")).await.epoch;
    }
    let mut ledger = Ledger::default();
    follow(&mut sub, &mut ledger, 99).await;

    cluster.nats.kill();
    bounded("not ready while the backbone is down", async {
        while cluster.nodes[0].is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match bounded("publish while down", c.publish_acked("c.restart", "lost?")).await {
        Err(ClientError::Server { code, .. }) => {
            assert_eq!(code, ErrorCode::Unavailable);
            assert!(code.is_retryable());
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }

    cluster.nats.restart();
    cluster.until_ready().await;
    for i in 0..100u64 {
        let ack = bounded("publish after the restart", async {
            // The node may need a moment after reconnecting before
            // JetStream answers; UNAVAILABLE says retry.
            loop {
                match c.publish_acked("c.restart", format!("b{i}")).await {
                    Err(ClientError::Server {
                        code: ErrorCode::Unavailable,
                        ..
                    }) => tokio::time::sleep(Duration::from_millis(50)).await,
                    other => break other,
                }
            }
        })
        .await
        .expect("publish after the restart");
        assert_eq!(
            ack.epoch, epoch,
            "a restart of the backbone is not a new epoch"
        );
        assert_eq!(ack.seq, 100 + i);
    }
    follow(&mut sub, &mut ledger, 199).await;
    assert_eq!((ledger.delivered, ledger.missed), (200, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_outside_the_backbone_stays_local() {
    if !nats::available("a_topic_outside_the_backbone_stays_local") {
        return;
    }
    let cluster = Cluster::start(2, |_| {}).await;
    let (a, b) = (cluster.client(0).await, cluster.client(1).await);
    let mut on_b = subscribe(&b, "local.x", SubscribeOptions::default()).await;
    for i in 0..5u64 {
        let ack = publish(&a, "local.x", "on a").await;
        assert_eq!(ack.seq, i, "node 0's own numbering");
    }
    let ack = publish(&b, "local.x", "on b").await;
    assert_eq!(ack.seq, 0, "node 1 numbers its own local topic from 0");
    match next_event(&mut on_b).await {
        Event::Message { seq, payload, .. } => {
            assert_eq!((seq, payload.as_ref()), (0, b"on b".as_ref()))
        }
        other => panic!("expected node 1's own message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_publishes_reach_every_node_in_order() {
    if !nats::available("fire_and_forget_publishes_reach_every_node_in_order") {
        return;
    }
    let cluster = Cluster::start(2, |_| {}).await;
    let (a, b) = (cluster.client(0).await, cluster.client(1).await);
    let mut on_b = subscribe(&b, "c.fast", SubscribeOptions::default()).await;
    // Pipelined: the publishing node keeps many acknowledgements pending.
    const N: u64 = 2000;
    let publisher = a.publisher();
    for i in 0..N {
        publisher
            .publish("c.fast", format!("m{i}"))
            .await
            .expect("publish");
    }
    bounded("finish", publisher.finish())
        .await
        .expect("every publish acknowledged by the backbone");
    let mut ledger = Ledger::default();
    for i in 0..N {
        let event = next_event(&mut on_b).await;
        ledger.record(&event);
        match event {
            Event::Message { payload, .. } => {
                assert_eq!(payload.as_ref(), format!("m{i}").as_bytes())
            }
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    ledger.assert_accounting();
    assert_eq!((ledger.start, ledger.delivered), (Some(0), N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_follows_backbone_topics_created_on_other_nodes() {
    if !nats::available("a_wildcard_follows_backbone_topics_created_on_other_nodes") {
        return;
    }
    let cluster = Cluster::start(2, |_| {}).await;
    let (a, b) = (cluster.client(0).await, cluster.client(1).await);
    // A topic that exists on the backbone (created through node 0) before
    // the subscription, which starts at latest.
    for i in 0..5 {
        publish(&a, "c.w.old", format!("o{i}")).await;
    }
    let mut sub = subscribe(&b, "c.w.*", SubscribeOptions::default()).await;
    let mut ledgers: std::collections::HashMap<String, Ledger> = Default::default();
    fn record(ledgers: &mut std::collections::HashMap<String, Ledger>, event: &Event) {
        ledgers
            .entry(event.topic().to_owned())
            .or_default()
            .record(event);
    }
    match next_event(&mut sub).await {
        e @ Event::Joined { start_seq: 5, .. } if e.topic() == "c.w.old" => {
            record(&mut ledgers, &e)
        }
        other => panic!("expected c.w.old joined at its head, got {other:?}"),
    }
    // More on the old topic, and a new topic, both through node 0 only.
    for i in 5..8 {
        publish(&a, "c.w.old", format!("o{i}")).await;
    }
    for i in 0..4 {
        publish(&a, "c.w.new", format!("n{i}")).await;
    }
    let done = |l: &std::collections::HashMap<String, Ledger>| {
        l.get("c.w.old").is_some_and(|l| l.next == Some(8))
            && l.get("c.w.new").is_some_and(|l| l.next == Some(4))
    };
    while !done(&ledgers) {
        let event = next_event(&mut sub).await;
        record(&mut ledgers, &event);
    }
    let new = &ledgers["c.w.new"];
    assert_eq!(
        (new.start, new.delivered, new.missed),
        (Some(0), 4, 0),
        "a topic created after the subscription is followed from its first message"
    );
    let old = &ledgers["c.w.old"];
    assert_eq!((old.start, old.delivered, old.missed), (Some(5), 3, 0));
}

/// `LAPWING_LONG=1`: the long version of the repeated-kill test.
fn long() -> bool {
    std::env::var("LAPWING_LONG").is_ok_and(|v| v == "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_survives_its_nodes_being_killed_in_turn() {
    if !nats::available("a_subscriber_survives_its_nodes_being_killed_in_turn") {
        return;
    }
    // The publisher's node is in this process; the subscriber's two nodes
    // are processes, SIGKILLed and restarted (same port) in turn while
    // messages flow. CI: 2 rounds; LAPWING_LONG=1: 10 rounds.
    let rounds: u64 = if long() { 10 } else { 2 };
    let per_round: u64 = if long() { 5_000 } else { 1_000 };
    let cluster = Cluster::start(1, |_| {}).await;
    let spec = kit::Spec::new()
        .env("LAPWING_BACKBONE_URL", cluster.nats.url())
        .env("LAPWING_TLS_CERT", cluster.cert.display())
        .env("LAPWING_TLS_KEY", cluster.key.display());
    let mut nodes = vec![
        kit::ServerProcess::start(&spec),
        kit::ServerProcess::start(&spec),
    ];
    for node in &nodes {
        until_ready(node.http).await;
    }
    let cfg = ClientConfig::new(
        format!("{},{}", nodes[0].quic, nodes[1].quic),
        Trust::CaFile(cluster.cert.clone()),
    );
    let subscriber = bounded("connect", Client::connect(cfg))
        .await
        .expect("connects");
    let mut sub = subscribe(&subscriber, "c.turns", SubscribeOptions::default()).await;
    let publisher = cluster.client(0).await;
    // Publishing (and killing) runs beside the reader, which keeps up, so
    // the client's buffer never has to lap anything.
    let mut publishing = tokio::spawn(async move {
        let mut last = None;
        for round in 0..rounds {
            // Half the round's messages, a node killed (the one the client
            // is on: the first in its list, then the other), the rest.
            for i in 0..per_round {
                if i == per_round / 2 {
                    let k = (round % 2) as usize;
                    let victim = nodes.remove(k);
                    nodes.insert(k, victim.kill_and_restart(&spec));
                }
                let ack = publish(&publisher, "c.turns", format!("r{round}m{i}")).await;
                last = Some(ack);
            }
        }
        (last.expect("published"), nodes)
    });
    let mut ledger = Ledger::default();
    let (last, _nodes) = loop {
        tokio::select! {
            event = next_event(&mut sub) => ledger.record(&event),
            done = &mut publishing => break done.expect("publisher"),
        }
    };
    follow(&mut sub, &mut ledger, last.seq).await;
    assert_eq!(ledger.epoch, Some(last.epoch));
    assert_eq!(
        (ledger.delivered, ledger.missed),
        (rounds * per_round, 0),
        "every message once, none missed ({:?})",
        ledger.resyncs
    );
}
