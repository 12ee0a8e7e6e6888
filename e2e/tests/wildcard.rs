//! Wildcard subscriptions end to end: the contract per topic on both
//! edges (one topic lapped, the others untouched; a topic created later
//! delivered from its first message), the resume of every topic after a
//! reconnect, and the wildcard grant of a principal.

mod support;

use std::collections::HashMap;

use lapwing_client::{Client, ClientError, Event, ResyncReason, SubscribeOptions, Subscription};
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{
    delivery, start_position, Delivery, ErrorCode, LagPolicy, StartPosition, SubscribeRequest,
    TopicPosition,
};
use lapwing_server::config::{PrincipalConfig, RulesConfig, TopicOverride};
use lapwing_server::Config;
use support::{bounded, channel, client_config, connect, next_event, server, until, Ledger};
use tonic::Streaming;

/// `lapped.*` topics get a 16 KiB ring (a few hundred small messages), so
/// a burst laps a subscriber that is not reading.
fn small_rings(c: &mut Config) {
    c.topics.push(TopicOverride {
        prefix: Some("lapped.".into()),
        ring_bytes: Some(16 * 1024),
        max_message_bytes: Some(1024),
        ..Default::default()
    });
}

/// Reads `sub` into one ledger per topic until every topic in `heads` has
/// been covered up to its head (the next seq to be published).
async fn follow(
    sub: &mut Subscription,
    ledgers: &mut HashMap<String, Ledger>,
    heads: &[(&str, u64)],
) {
    let done = |ledgers: &HashMap<String, Ledger>| {
        heads.iter().all(|(topic, head)| {
            ledgers
                .get(*topic)
                .is_some_and(|l| l.next.is_some_and(|n| n >= *head))
        })
    };
    // Bounded: each event moves one topic on, and every wait is bounded.
    while !done(ledgers) {
        let event = next_event(sub).await;
        let ledger = ledgers.entry(event.topic().to_owned()).or_default();
        if !matches!(event, Event::Joined { .. }) {
            assert!(
                ledger.next.is_some(),
                "an event of {} before its Joined: {event:?}",
                event.topic()
            );
        }
        ledger.record(&event);
    }
}

async fn publish_n(client: &Client, topic: &str, n: u64) {
    for i in 0..n {
        bounded("publish", client.publish(topic, format!("{topic} {i}")))
            .await
            .unwrap();
    }
    bounded("flush", client.flush()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_wildcard_keeps_the_contract_per_topic() {
    let (srv, _dir) = server(small_rings);
    let publisher = connect(&srv).await;
    publish_n(&publisher, "lapped.eur", 3).await;
    publish_n(&publisher, "lapped.usd", 3).await;
    publish_n(&publisher, "other", 3).await;
    let mut cfg = client_config(&srv);
    // A subscriber that holds little, so the server's ring laps it.
    cfg.subscription_buffer_events = 16;
    cfg.stream_receive_window = 4 * 1024;
    let client = bounded("connect", Client::connect(cfg)).await.unwrap();
    let mut sub = bounded(
        "subscribe",
        client.subscribe("lapped.>", SubscribeOptions::default()),
    )
    .await
    .expect("a pattern subscribe");
    // eur laps its ring many times over while nobody reads; usd gets a
    // few; a topic created now joins from its first message.
    const BURST: u64 = 5_000;
    publish_n(&publisher, "lapped.eur", BURST).await;
    publish_n(&publisher, "lapped.usd", 5).await;
    publish_n(&publisher, "lapped.gbp.spot", 4).await;
    let mut ledgers = HashMap::new();
    follow(
        &mut sub,
        &mut ledgers,
        &[
            ("lapped.eur", 3 + BURST),
            ("lapped.usd", 8),
            ("lapped.gbp.spot", 4),
        ],
    )
    .await;
    let eur = &ledgers["lapped.eur"];
    eur.assert_accounting();
    assert_eq!(eur.start, Some(3), "latest: from the head at subscribe");
    assert_eq!(eur.delivered + eur.missed, BURST, "eur: exact");
    assert!(
        eur.missed > 0
            && eur.resyncs.iter().all(|r| matches!(
                r,
                Event::Resync {
                    reason: ResyncReason::Lapped,
                    ..
                }
            )),
        "eur was lapped and told so: {:?}",
        eur.resyncs
    );
    let usd = &ledgers["lapped.usd"];
    assert_eq!(
        (usd.start, usd.delivered, usd.missed),
        (Some(3), 5, 0),
        "usd is not touched by eur's lap"
    );
    let gbp = &ledgers["lapped.gbp.spot"];
    assert_eq!((gbp.start, gbp.delivered, gbp.missed), (Some(0), 4, 0));
    assert!(!ledgers.contains_key("other"), "`other` does not match");
    // The admin view: one subscription, named by its pattern.
    let conns = srv.connections().list();
    let sub_info = conns
        .iter()
        .flat_map(|c| c.info().subscriptions)
        .find(|s| s.topic == "lapped.>")
        .expect("listed by its pattern");
    assert_eq!(
        sub_info.delivered,
        eur.delivered + usd.delivered + gbp.delivered
    );
    client.close().await.unwrap();
    srv.shutdown().await;
}

/// After an operator closes the connection the client resumes every
/// topic of the pattern after its own position, and a topic created
/// while it was away arrives from its first message: nothing twice,
/// nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_wildcard_resumes_every_topic_after_a_reconnect() {
    let (srv, _dir) = server(|_| {});
    let publisher = connect(&srv).await;
    publish_n(&publisher, "feed.a", 2).await;
    publish_n(&publisher, "feed.b", 2).await;
    let mut cfg = client_config(&srv);
    cfg.client_name = "wildcard-resume".into();
    let client = bounded("connect", Client::connect(cfg)).await.unwrap();
    let mut sub = bounded(
        "subscribe",
        client.subscribe("feed.*", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    publish_n(&publisher, "feed.a", 5).await;
    let mut ledgers = HashMap::new();
    follow(&mut sub, &mut ledgers, &[("feed.a", 7), ("feed.b", 2)]).await;
    let conn = |srv: &lapwing_server::ServerHandle| {
        srv.connections()
            .list()
            .iter()
            .map(|c| c.info())
            .find(|c| c.client_name == "wildcard-resume" && !c.subscriptions.is_empty())
            .map(|c| c.id)
    };
    let first = conn(&srv).expect("subscribed");
    assert!(srv.connections().close(first, "test"));
    // Closing is asynchronous: until the old connection's task has ended,
    // its subscription could still carry what is published next.
    until("the closed connection ends", || {
        let listed = srv.connections().list().iter().any(|c| c.id() == first);
        (!listed).then_some(())
    })
    .await;
    // While the client is away (or resubscribing): more on both topics,
    // and a new one.
    publish_n(&publisher, "feed.a", 3).await;
    publish_n(&publisher, "feed.b", 4).await;
    publish_n(&publisher, "feed.c", 2).await;
    follow(
        &mut sub,
        &mut ledgers,
        &[("feed.a", 10), ("feed.b", 6), ("feed.c", 2)],
    )
    .await;
    for (topic, delivered) in [("feed.a", 8), ("feed.b", 4), ("feed.c", 2)] {
        let l = &ledgers[topic];
        l.assert_accounting();
        assert_eq!((l.delivered, l.missed), (delivered, 0), "{topic}");
    }
    // What was published after the old connection ended came over a new
    // one, which registered the subscription before delivering.
    let second = until("a new connection holds the subscription", || conn(&srv)).await;
    assert_ne!(second, first);
    client.close().await.unwrap();
    srv.shutdown().await;
}

fn principals(c: &mut Config) {
    let rules = |allow: &[&str], deny: &[&str]| RulesConfig {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
    };
    c.principals = vec![
        PrincipalConfig {
            name: "ticker".into(),
            token: Some("ticker-secret".into()),
            publish: rules(&[">"], &[]),
            subscribe: rules(&["prices.>", "inbox.{name}.>"], &["prices.internal.>"]),
            ..Default::default()
        },
        PrincipalConfig {
            name: "eur-only".into(),
            token: Some("eur-secret".into()),
            subscribe: rules(&["prices.eur"], &[]),
            ..Default::default()
        },
    ];
}

#[tokio::test]
async fn quic_a_wildcard_needs_a_grant_that_covers_it_and_no_deny_it_overlaps() {
    let (srv, _dir) = server(principals);
    let as_principal = |token: &str| {
        let mut cfg = client_config(&srv);
        cfg.token = Some(token.into());
        Client::connect(cfg)
    };
    let ticker = bounded("connect", as_principal("ticker-secret"))
        .await
        .unwrap();
    let eur_only = bounded("connect", as_principal("eur-secret"))
        .await
        .unwrap();
    let code = |e: ClientError| e.code();
    for (client, pattern, why) in [
        (&eur_only, "prices.*", "prices.eur does not cover prices.*"),
        (&ticker, "prices.>", "overlaps the deny prices.internal.>"),
        (&ticker, "inbox.other.>", "{name} is ticker"),
    ] {
        let e = bounded(
            "subscribe",
            client.subscribe(pattern, SubscribeOptions::default()),
        )
        .await
        .expect_err(why);
        assert_eq!(code(e), Some(ErrorCode::PermissionDenied), "{pattern}");
    }
    bounded(
        "subscribe",
        eur_only.subscribe("prices.eur", SubscribeOptions::default()),
    )
    .await
    .expect("the literal it is granted");
    let mut mine = bounded(
        "subscribe",
        ticker.subscribe("inbox.ticker.>", SubscribeOptions::default()),
    )
    .await
    .expect("covered by inbox.{name}.>");
    let mut fx = bounded(
        "subscribe",
        ticker.subscribe("prices.*", SubscribeOptions::default()),
    )
    .await
    .expect("covered by prices.>, and no topic of it is prices.internal.>");
    bounded(
        "publish",
        ticker.publish_acked("inbox.ticker.replies", "hi"),
    )
    .await
    .unwrap();
    bounded("publish", ticker.publish_acked("prices.chf", "0.95"))
        .await
        .unwrap();
    for (sub, topic) in [(&mut mine, "inbox.ticker.replies"), (&mut fx, "prices.chf")] {
        // `prices.*` also follows `prices.eur` (created by eur-only's
        // subscribe): the topic's own Joined and message, in that order.
        let mut ledgers = HashMap::new();
        follow(sub, &mut ledgers, &[(topic, 1)]).await;
        assert_eq!(
            (ledgers[topic].start, ledgers[topic].delivered),
            (Some(0), 1)
        );
    }
    ticker.close().await.unwrap();
    eur_only.close().await.unwrap();
    srv.shutdown().await;
}

/// One gRPC subscription stream, as a client sees it: per topic, each
/// event continues where the last one of that topic ended.
#[derive(Debug, Default)]
struct GrpcTopic {
    epoch: u64,
    next: u64,
    delivered: u64,
    missed: u64,
    lapped: u32,
}

async fn grpc_follow(
    stream: &mut Streaming<Delivery>,
    topics: &mut HashMap<String, GrpcTopic>,
    heads: &[(&str, u64)],
) {
    let done = |topics: &HashMap<String, GrpcTopic>| {
        heads
            .iter()
            .all(|(t, head)| topics.get(*t).is_some_and(|s| s.next >= *head))
    };
    while !done(topics) {
        let d = bounded("delivery", stream.message())
            .await
            .expect("stream open")
            .expect("a delivery");
        match d.kind.expect("an event") {
            delivery::Kind::Left(l) => panic!("nothing is deleted here: {l:?}"),
            delivery::Kind::Joined(j) => {
                topics.insert(
                    j.topic,
                    GrpcTopic {
                        epoch: j.epoch,
                        next: j.start_seq,
                        ..Default::default()
                    },
                );
            }
            delivery::Kind::Message(m) => {
                let t = topics.get_mut(&m.topic).expect("Joined first");
                assert_eq!((m.epoch, m.seq), (t.epoch, t.next), "{}: gap", m.topic);
                t.delivered += 1;
                t.next += 1;
            }
            delivery::Kind::Resync(r) => {
                let t = topics.get_mut(&r.topic).expect("Joined first");
                assert_eq!(
                    r.resume_seq,
                    t.next + r.missed,
                    "{}: resync adds up",
                    r.topic
                );
                if r.reason == lapwing_proto::v1::ResyncReason::Lapped as i32 {
                    t.lapped += 1;
                }
                t.missed += r.missed;
                t.next = r.resume_seq;
            }
        }
    }
}

/// gRPC: a lap on one topic of a pattern is that topic's Resync; then a
/// second call resumes each topic from the positions the first one reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_wildcard_keeps_the_contract_per_topic_and_resumes_per_topic() {
    let (srv, _dir) = server(small_rings);
    let publisher = connect(&srv).await;
    publish_n(&publisher, "lapped.a", 1).await;
    publish_n(&publisher, "lapped.b", 1).await;
    let mut bus = BusClient::new(channel(&srv).await);
    let request = |start, resume| SubscribeRequest {
        topic: "lapped.*".into(),
        start: Some(StartPosition { kind: Some(start) }),
        lag_policy: LagPolicy::ResumeOldest as i32,
        resume,
    };
    let oldest = start_position::Kind::Oldest(start_position::Oldest {});
    let mut stream = bounded("subscribe", bus.subscribe(request(oldest, Vec::new())))
        .await
        .expect("a pattern subscribe")
        .into_inner();
    let mut topics = HashMap::new();
    grpc_follow(
        &mut stream,
        &mut topics,
        &[("lapped.a", 1), ("lapped.b", 1)],
    )
    .await;
    // While this stream is not read, `a` laps its 16 KiB ring; `b` does not.
    publish_n(&publisher, "lapped.a", 5_000).await;
    publish_n(&publisher, "lapped.b", 3).await;
    grpc_follow(
        &mut stream,
        &mut topics,
        &[("lapped.a", 5_001), ("lapped.b", 4)],
    )
    .await;
    let a = &topics["lapped.a"];
    assert!(a.lapped > 0, "a was lapped: {a:?}");
    assert_eq!(a.delivered + a.missed, 5_001);
    let b = &topics["lapped.b"];
    assert_eq!((b.delivered, b.missed, b.lapped), (4, 0, 0));
    drop(stream);

    // A second call resumes both topics where the first stopped.
    publish_n(&publisher, "lapped.b", 2).await;
    let resume = topics
        .iter()
        .map(|(topic, t)| TopicPosition {
            topic: topic.clone(),
            epoch: t.epoch,
            next_seq: t.next,
        })
        .collect();
    let mut stream = bounded("resume", bus.subscribe(request(oldest, resume)))
        .await
        .expect("a resume")
        .into_inner();
    let mut resumed = HashMap::new();
    grpc_follow(
        &mut stream,
        &mut resumed,
        &[("lapped.a", 5_001), ("lapped.b", 6)],
    )
    .await;
    assert_eq!(resumed["lapped.b"].delivered, 2, "only what came after");
    assert_eq!(resumed["lapped.a"].delivered, 0);
    publisher.close().await.unwrap();
    srv.shutdown().await;
}

/// A deleted topic leaves a wildcard subscription with `Left`, and a topic
/// of the same name created again joins in its new epoch, from seq 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_a_deleted_topic_leaves_and_a_recreated_one_joins_again() {
    let (srv, _dir) = server(|_| {});
    let publisher = connect(&srv).await;
    publish_n(&publisher, "gone.a", 2).await;
    let client = connect(&srv).await;
    let mut sub = bounded(
        "subscribe",
        client.subscribe("gone.*", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let first = match next_event(&mut sub).await {
        Event::Joined { topic, epoch, .. } if &*topic == "gone.a" => epoch,
        other => panic!("{other:?}"),
    };
    srv.registry().delete("gone.a").unwrap();
    match next_event(&mut sub).await {
        Event::Left { topic } => assert_eq!(&*topic, "gone.a"),
        other => panic!("expected Left, got {other:?}"),
    }
    publish_n(&publisher, "gone.a", 1).await;
    match next_event(&mut sub).await {
        Event::Joined {
            topic,
            epoch,
            start_seq: 0,
        } if &*topic == "gone.a" => assert_ne!(epoch, first, "a new epoch"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next_event(&mut sub).await,
        Event::Message { seq: 0, .. }
    ));
    client.close().await.unwrap();
    srv.shutdown().await;
}
