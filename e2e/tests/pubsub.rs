//! Publish/subscribe through a real server over loopback QUIC, checked on
//! the client's view: order, sequence numbers, fanout, many topics on one
//! connection, and the accounting invariant under a slow subscriber.

mod support;

use bytes::Bytes;
use lapwing_client::{ClientError, ErrorCode, Event, ResyncReason, Start, SubscribeOptions};
use support::{bounded, connect, next_event, server, Ledger, STEP};

fn payload_of(event: &Event) -> &[u8] {
    match event {
        Event::Message { payload, .. } => payload,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// `Publisher::finish` answers once the server has *published* every frame
/// of the stream (its PublishStreamDone), not once QUIC acknowledged the
/// bytes: a server that closes the connection in between would otherwise
/// lose them with `finish` saying Ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_returns_once_the_server_has_published_everything() {
    let (srv, _dir) = server(|_| {});
    let client = connect(&srv).await;
    let publisher = client.publisher();
    let payload = Bytes::from(vec![1u8; 512]);
    for round in 1..=3u64 {
        for _ in 0..2_000 {
            publisher.publish("fin.t", payload.clone()).await.unwrap();
        }
        bounded("finish", publisher.finish()).await.unwrap();
        let head = srv.registry().get("fin.t").expect("topic created").head();
        assert_eq!(
            head,
            round * 2_000,
            "finish said Ok before the server published it all"
        );
    }
    client.close().await.unwrap();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_fire_and_forget_and_acked() {
    let (srv, _dir) = server(|_| {});
    let client = connect(&srv).await;
    let mut sub = bounded(
        "subscribe",
        client.subscribe("rt.prices", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let (epoch, start) = sub.started_at().expect("SubscribeOk seen");
    assert_eq!(Some(epoch), srv.epoch_of("rt.prices"));

    for i in 0..10 {
        client.publish("rt.prices", format!("m{i}")).await.unwrap();
    }
    let ack = bounded("ack", client.publish_acked("rt.prices", "acked"))
        .await
        .unwrap();
    assert_eq!(ack.epoch, epoch);

    let mut ledger = Ledger::starting_at(epoch, start);
    let mut payloads = Vec::new();
    for _ in 0..11 {
        let e = next_event(&mut sub).await;
        ledger.record(&e);
        payloads.push(String::from_utf8(payload_of(&e).to_vec()).unwrap());
        if let Event::Message {
            publish_time_unix_nanos,
            topic,
            ..
        } = &e
        {
            assert!(*publish_time_unix_nanos > 0);
            assert_eq!(&**topic, "rt.prices");
        }
    }
    // One client, two streams (fire-and-forget and acked): the ten
    // fire-and-forget messages keep their order; the acked one is somewhere.
    let ff: Vec<_> = payloads
        .iter()
        .filter(|p| p.starts_with('m'))
        .cloned()
        .collect();
    assert_eq!(ff, (0..10).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert!(ledger.seqs.contains(&ack.seq));
    assert!(ledger.resyncs.is_empty());
    ledger.assert_accounting();
    client.close().await.unwrap();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_checks_reject_bad_topic_and_oversize_payload() {
    let (srv, _dir) = server(|_| {});
    let client = connect(&srv).await;
    let err = client.publish("bad topic", "x").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidTopic(_)), "{err}");
    let err = client
        .subscribe("a..b", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidTopic(_)), "{err}");
    let err = client
        .subscribe("a.>.b", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidPattern(_)), "{err}");
    let max = client.max_message_bytes();
    assert_eq!(max, 64 * 1024, "Welcome carries the test config's limit");
    let err = client
        .publish_acked("ok.topic", Bytes::from(vec![0u8; max + 1]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::MessageTooLarge { .. }), "{err}");
    // A payload of exactly the limit goes through.
    let ack = bounded(
        "ack",
        client.publish_acked("ok.topic", Bytes::from(vec![1u8; max])),
    )
    .await
    .unwrap();
    assert_eq!(ack.seq, 0);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_subscribers_each_receive_everything_in_order() {
    const SUBSCRIBERS: usize = 100;
    const MESSAGES: u64 = 200;
    let (srv, _dir) = server(|_| {});
    // Ten at a time: a debug build on two cores handshakes slowly, and the
    // server gives each connection a few seconds to say Hello.
    let mut clients = Vec::new();
    for _ in 0..SUBSCRIBERS / 10 {
        let batch = bounded(
            "connect 10",
            futures::future::try_join_all(
                (0..10).map(|_| lapwing_client::Client::connect(support::client_config(&srv))),
            ),
        )
        .await
        .unwrap();
        clients.extend(batch);
    }
    let subs = bounded(
        "subscribe 100",
        futures::future::try_join_all(
            clients
                .iter()
                .map(|c| c.subscribe("fan.out", SubscribeOptions::default())),
        ),
    )
    .await
    .unwrap();
    let publisher = connect(&srv).await;
    for i in 0..MESSAGES {
        publisher.publish("fan.out", i.to_string()).await.unwrap();
    }
    // Acked, so the test knows the epoch; it may overtake the others (another
    // stream), so subscribers wait for the count, not for its seq.
    let end = bounded("ack", publisher.publish_acked("fan.out", "end"))
        .await
        .unwrap();

    let tasks: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let (epoch, start) = sub.started_at().unwrap();
                assert_eq!(epoch, end.epoch);
                let mut ledger = Ledger::starting_at(epoch, start);
                ledger.follow_until(&mut sub, start + MESSAGES).await;
                ledger
            })
        })
        .collect();
    for t in tasks {
        let ledger = bounded("subscriber", t).await.unwrap();
        assert_eq!(ledger.delivered, MESSAGES + 1);
        assert!(ledger.resyncs.is_empty());
        ledger.assert_accounting();
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_topics_on_one_connection_stay_separate() {
    const TOPICS: usize = 40;
    let (srv, _dir) = server(|_| {});
    let client = connect(&srv).await;
    let mut subs = Vec::new();
    for t in 0..TOPICS {
        let sub = bounded(
            "subscribe",
            client.subscribe(&format!("many.t{t}"), SubscribeOptions::default()),
        )
        .await
        .unwrap();
        subs.push(sub);
    }
    let publisher = client.publisher();
    for round in 0..5 {
        for t in 0..TOPICS {
            publisher
                .publish(&format!("many.t{t}"), format!("{t}:{round}"))
                .await
                .unwrap();
        }
    }
    publisher.flush().await.unwrap();
    for (t, sub) in subs.iter_mut().enumerate() {
        let mut ledger = Ledger::default();
        for round in 0..5 {
            let e = next_event(sub).await;
            assert_eq!(e.topic(), format!("many.t{t}"));
            assert_eq!(payload_of(&e), format!("{t}:{round}").as_bytes());
            ledger.record(&e);
        }
        assert_eq!(
            ledger.seqs,
            vec![0, 1, 2, 3, 4],
            "each topic has its own seqs"
        );
    }
    // Dropping one subscription leaves the others working.
    drop(subs.remove(0));
    client.publish("many.t1", "after").await.unwrap();
    let e = next_event(&mut subs[0]).await;
    assert_eq!(payload_of(&e), b"after");
    srv.shutdown().await;
}

/// A subscriber that does not read while a burst much larger than the ring
/// is published gets lapped: it receives resyncs, and what it receives plus
/// what the resyncs report missing is exactly what was published, with no
/// duplicate or reordering. A fast subscriber of the same topic, on another
/// connection, receives everything without a resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_exact_resyncs_and_does_not_slow_a_fast_one() {
    const RING_BYTES: usize = 16 * 1024;
    const PAYLOAD: usize = 512;
    const BURST: u64 = 8; // 4 KiB per burst: well inside the ring
    const BURSTS: u64 = 250; // 128 KiB in all: many times the ring
    let (srv, _dir) = server(|cfg| {
        cfg.topic_defaults.ring_bytes = RING_BYTES;
        cfg.limits.max_message_bytes = 4096;
    });

    let mut slow_cfg = support::client_config(&srv);
    // Small window and a small buffer that pushes back (the default 4 096
    // events would hold all 2 000), so that the server's writes block soon.
    slow_cfg.stream_receive_window = 8 * 1024;
    slow_cfg.subscription_buffer_events = 64;
    slow_cfg.buffer_overflow = lapwing_client::BufferOverflow::PushBack;
    let slow_client = bounded("connect", lapwing_client::Client::connect(slow_cfg))
        .await
        .unwrap();
    let mut slow = bounded(
        "subscribe",
        slow_client.subscribe("lag.topic", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let fast_client = connect(&srv).await;
    let mut fast = bounded(
        "subscribe",
        fast_client.subscribe("lag.topic", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let (epoch, start) = fast.started_at().unwrap();
    let publisher = connect(&srv).await;

    // Publish in bursts, each read fully by the fast subscriber before the
    // next, so only the slow one can fall a ring behind. (Counted by
    // messages received, not by an ack: acked and fire-and-forget publishes
    // travel on different streams, with no order between them.)
    let mut fast_ledger = Ledger::starting_at(epoch, start);
    for b in 0..BURSTS {
        for i in 0..BURST {
            let mut p = vec![b'.'; PAYLOAD];
            p[..8].copy_from_slice(&(b * BURST + i).to_le_bytes());
            publisher.publish("lag.topic", p).await.unwrap();
        }
        let last = start + (b + 1) * BURST - 1;
        fast_ledger.follow_until(&mut fast, last).await;
    }
    let last = start + BURST * BURSTS - 1;
    assert!(
        fast_ledger.resyncs.is_empty(),
        "fast subscriber was lapped: {:?}",
        fast_ledger.resyncs
    );
    assert_eq!(fast_ledger.delivered, BURST * BURSTS);
    fast_ledger.assert_accounting();

    // Now the slow one reads everything that is left.
    let (slow_epoch, slow_start) = slow.started_at().unwrap();
    let mut slow_ledger = Ledger::starting_at(slow_epoch, slow_start);
    slow_ledger.follow_until(&mut slow, last).await;
    assert!(
        !slow_ledger.resyncs.is_empty(),
        "slow subscriber was never lapped"
    );
    for r in &slow_ledger.resyncs {
        assert!(
            matches!(r, Event::Resync { reason: lapwing_client::ResyncReason::Lapped, missed, .. } if *missed > 0),
            "{r:?}"
        );
    }
    slow_ledger.assert_accounting();
    assert_eq!(slow_ledger.delivered + slow_ledger.missed, BURST * BURSTS);
    assert!(slow_ledger.delivered > 0);
    let _ = STEP;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_replays_what_the_ring_holds_and_disconnect_policy_ends_with_lagged() {
    let (srv, _dir) = server(|cfg| {
        cfg.topic_defaults.ring_bytes = 16 * 1024;
        cfg.limits.max_message_bytes = 4096;
    });
    let client = connect(&srv).await;
    for i in 0..5 {
        client.publish_acked("old.t", format!("{i}")).await.unwrap();
    }
    let mut sub = bounded(
        "subscribe",
        client.subscribe(
            "old.t",
            SubscribeOptions {
                start: Start::Oldest,
                ..Default::default()
            },
        ),
    )
    .await
    .unwrap();
    assert_eq!(sub.started_at().unwrap().1, 0);
    for i in 0..5u64 {
        match next_event(&mut sub).await {
            Event::Message { seq, .. } => assert_eq!(seq, i),
            other => panic!("{other:?}"),
        }
    }

    // Disconnect policy: a subscriber that falls a ring behind is closed
    // with LAGGED, and the connection carries on.
    let mut cfg = support::client_config(&srv);
    cfg.stream_receive_window = 4 * 1024;
    let lagger = bounded("connect", lapwing_client::Client::connect(cfg))
        .await
        .unwrap();
    let mut lagging = bounded(
        "subscribe",
        lagger.subscribe(
            "old.t",
            SubscribeOptions {
                start: Start::Latest,
                lag_policy: lapwing_client::LagPolicy::Disconnect,
            },
        ),
    )
    .await
    .unwrap();
    for _ in 0..200 {
        client.publish("old.t", vec![b'x'; 1024]).await.unwrap();
    }
    client.publish_acked("old.t", "sync").await.unwrap();
    let err = bounded("lagged", async {
        loop {
            match lagging.recv().await {
                Some(Ok(Event::Message { .. })) => continue,
                Some(Ok(other)) => panic!("disconnect policy must not resync: {other:?}"),
                Some(Err(e)) => break e,
                None => panic!("ended without an error"),
            }
        }
    })
    .await;
    assert_eq!(err.code(), Some(ErrorCode::Lagged), "{err}");
    // The lagger's connection still works.
    let ack = bounded("ack", lagger.publish_acked("old.t", "still here"))
        .await
        .unwrap();
    assert_eq!(Some(ack.epoch), srv.epoch_of("old.t"));
    srv.shutdown().await;
}

/// The slow reader, scaled down: a consumer taking 5 events/s from
/// a topic published at 1 000 msgs/s hears of its lag at its next read
/// once its buffer (256 events here, 4 096 by default) has been full for
/// half a second: the client laps the oldest waiting messages into an
/// exact resync
/// (`BufferOverflow::LapOldest`, the default) instead of pushing back on
/// the stream, where the server's resync would wait behind the backlog.
/// Counted in reads, not seconds: 1 600 messages through a 256-event buffer
/// must reach the consumer as a resync within its first 16 reads (3.2 s at
/// 5 reads/s), where pushing back would have it read hundreds of old
/// messages first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_hears_of_its_lag_at_its_next_read() {
    const PUBLISHED: u64 = 1_600;
    const BUFFER: usize = 256;
    let (srv, _dir) = server(|_| {});
    let mut cfg = support::client_config(&srv);
    cfg.subscription_buffer_events = BUFFER;
    let client = bounded("connect", lapwing_client::Client::connect(cfg))
        .await
        .unwrap();
    let mut sub = bounded(
        "subscribe",
        client.subscribe("slow.reader", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let (epoch, start) = sub.started_at().unwrap();
    let publisher = connect(&srv).await;
    let publishing = tokio::spawn(async move {
        let mut pace = tokio::time::interval(std::time::Duration::from_millis(1));
        for i in 0..PUBLISHED {
            pace.tick().await;
            publisher
                .publish("slow.reader", Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        publisher.close().await.unwrap();
    });
    let mut ledger = Ledger::starting_at(epoch, start);
    let mut reads = 0;
    let mut read_pace = tokio::time::interval(std::time::Duration::from_millis(200));
    while ledger.resyncs.is_empty() {
        assert!(
            reads < 16,
            "no resync in {reads} reads: the consumer is reading an old backlog"
        );
        read_pace.tick().await;
        ledger.record(&next_event(&mut sub).await);
        reads += 1;
    }
    let Event::Resync {
        reason, resume_seq, ..
    } = ledger.resyncs[0].clone()
    else {
        unreachable!("resyncs holds resyncs")
    };
    assert_eq!(reason, ResyncReason::Lapped);
    bounded("publishing", publishing).await.unwrap();
    // What follows the first resync is recent: at most a buffer (and the
    // batch the reader was handing over) behind the head at that moment.
    ledger.follow_until(&mut sub, start + PUBLISHED - 1).await;
    ledger.assert_accounting();
    assert_eq!(ledger.delivered + ledger.missed, PUBLISHED);
    assert!(
        resume_seq > start + (reads as u64),
        "the resync skipped to recent messages (resumes at {resume_seq})"
    );
    drop(sub);
    client.close().await.unwrap();
    srv.shutdown().await;
}

/// A consumer that reads slowly on purpose (a small `subscription_buffer_events`
/// and stream window, as `lapwing sub --max-rate` sets them) learns of a lap
/// after a short backlog, not after thousands of buffered messages: the
/// client holds only what its buffer and window allow, so the server's ring,
/// not the client, absorbs the rest, and its loss arrives as a resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_client_buffer_surfaces_a_lap_early() {
    const PUBLISHED: u64 = 8000;
    const BURST: u64 = 100;
    let (srv, _dir) = server(|cfg| {
        cfg.topic_defaults.ring_bytes = 256 * 1024;
        cfg.limits.max_message_bytes = 1024;
    });
    let mut cfg = support::client_config(&srv);
    cfg.subscription_buffer_events = 16;
    cfg.stream_receive_window = 8 * 1024;
    let slow_client = bounded("connect", lapwing_client::Client::connect(cfg))
        .await
        .unwrap();
    let mut slow = bounded(
        "subscribe",
        slow_client.subscribe("buffer.topic", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let (epoch, start) = slow.started_at().unwrap();
    let publisher = connect(&srv).await;
    // Pipelined in bursts, so the subscription's stream carries many
    // messages per read (as with a fast publisher), filling the buffer.
    for burst in 0..PUBLISHED / BURST {
        let acks = futures::future::join_all(
            (0..BURST)
                .map(|_| publisher.publish_acked("buffer.topic", Bytes::from(vec![b'x'; 32]))),
        )
        .await;
        let mut seqs: Vec<u64> = acks.into_iter().map(|a| a.unwrap().seq).collect();
        seqs.sort_unstable();
        let first = start + burst * BURST;
        assert_eq!(seqs, (first..first + BURST).collect::<Vec<_>>());
    }
    // The client may hold its 16 events and what an 8 KiB window admits
    // (under 200 frames); the ring holds the rest until it is lapped. Seen
    // here: the first resync after 200-300 events with this buffer, after
    // 1300-1500 with the default 4096-event buffer.
    let mut ledger = Ledger::starting_at(epoch, start);
    let mut events_before_resync = 0u64;
    while ledger.resyncs.is_empty() {
        assert!(
            events_before_resync < 800,
            "no resync after {events_before_resync} events: the client buffered a long backlog"
        );
        ledger.record(&next_event(&mut slow).await);
        events_before_resync += 1;
    }
    ledger.follow_until(&mut slow, start + PUBLISHED - 1).await;
    ledger.assert_accounting();
    assert_eq!(ledger.delivered + ledger.missed, PUBLISHED);
    srv.shutdown().await;
}
