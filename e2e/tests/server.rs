//! Server behaviour over real QUIC with raw clients: what every Message
//! carries, acked publishes, per-subscription stream isolation with exact
//! resync accounting, resume, and graceful shutdown.

mod raw;

use lapwing_proto::v1::{
    self, control_response, delivery, start_position, ErrorCode, ResyncReason,
};
use raw::{
    bounded, closed_code, latest, next_delivery, next_response, publish_frame, server, Session,
};

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn messages_carry_seq_epoch_payload_and_publish_time() {
    let (srv, _dir) = server(|_| {});
    let mut sub = Session::open(&srv).await;
    let (ok, mut frames) = sub
        .subscribe(1, "rt.topic", latest(), v1::LagPolicy::ResumeOldest)
        .await;
    assert_eq!(ok.start_seq, 0);
    assert_eq!(Some(ok.epoch), srv.epoch_of("rt.topic"));

    let publisher = Session::open(&srv).await;
    let mut stream = publisher.publish_stream().await;
    let before = now_nanos();
    for i in 0..3u8 {
        stream
            .write_all(&publish_frame("rt.topic", &[i; 100]))
            .await
            .unwrap();
    }
    for i in 0..3u8 {
        match next_delivery(&mut frames).await {
            delivery::Kind::Message(m) => {
                assert_eq!(m.seq, u64::from(i));
                assert_eq!(m.epoch, ok.epoch);
                assert_eq!(m.payload, vec![i; 100]);
                assert!(
                    m.publish_time_unix_nanos >= before && m.publish_time_unix_nanos <= now_nanos()
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    srv.shutdown().await;
}

/// A subscriber on loopback gets its messages in datagrams far larger than
/// Ethernet's (several 1 KiB messages each): the server's path-MTU
/// discovery goes up to 6 KiB for loopback peers that accept it.
#[tokio::test]
async fn a_loopback_subscriber_receives_large_datagrams() {
    let (srv, _dir) = server(|_| {});
    let ep = raw::endpoint_accepting(srv.cert_pem_path(), lapwing_proto::ALPN, 6 * 1024);
    let conn = bounded("connect", ep.connect(srv.quic_addr(), "localhost").unwrap())
        .await
        .unwrap();
    let mut sub = Session::open_on(conn, "").await;
    let (_, mut frames) = sub
        .subscribe(1, "mtu.t", latest(), v1::LagPolicy::ResumeOldest)
        .await;
    let publisher = Session::open(&srv).await;
    let mut stream = publisher.publish_stream().await;
    // Path-MTU discovery runs once the handshake is confirmed and takes a
    // few round trips; rounds of 64 x 1 KiB until one arrives in large
    // datagrams (bounded: at 1452 B per datagram it never would).
    let mut largest_round_average = 0;
    for round in 0..50u64 {
        let before = sub.conn.stats().udp_rx;
        for _ in 0..64 {
            stream
                .write_all(&publish_frame("mtu.t", &[7; 1024]))
                .await
                .unwrap();
        }
        for i in 0..64 {
            match next_delivery(&mut frames).await {
                delivery::Kind::Message(m) => assert_eq!(m.seq, round * 64 + i),
                other => panic!("unexpected {other:?}"),
            }
        }
        let after = sub.conn.stats().udp_rx;
        let average = (after.bytes - before.bytes) / (after.datagrams - before.datagrams).max(1);
        largest_round_average = largest_round_average.max(average);
        if average > 3 * 1024 {
            break;
        }
    }
    assert!(
        largest_round_average > 3 * 1024,
        "datagrams averaged at most {largest_round_average} B in a round"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn acked_publish_returns_epoch_and_seq_in_order() {
    use futures::StreamExt;
    let (srv, _dir) = server(|_| {});
    let s = Session::open(&srv).await;
    let (mut send, recv) = bounded("open bi", s.conn.open_bi()).await.unwrap();
    let mut bytes = Vec::new();
    for i in 0..100u32 {
        bytes.extend(publish_frame("acked", &i.to_le_bytes()));
    }
    send.write_all(&bytes).await.unwrap();
    send.finish().unwrap();
    let mut results = tokio_util::codec::FramedRead::new(
        recv,
        lapwing_proto::FrameCodec::<v1::PublishResult>::new(1 << 20),
    );
    let mut epoch = None;
    for want in 0..100u64 {
        let r = bounded("result", results.next()).await.unwrap().unwrap();
        match r.kind.unwrap() {
            v1::publish_result::Kind::Ack(a) => {
                let epoch = *epoch.get_or_insert_with(|| srv.epoch_of("acked").unwrap());
                assert_eq!((a.epoch, a.seq), (epoch, want));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        bounded("end", results.next()).await.is_none(),
        "stream finished after the last ack"
    );
    srv.shutdown().await;
}

/// The point of one stream per subscription: a subscription the client does
/// not read is held back by its own stream's flow control, the ring laps it
/// and it later gets a Resync with the exact gap, while another
/// subscription on the same connection keeps flowing.
#[tokio::test]
async fn slow_subscription_is_resynced_while_another_on_the_same_connection_flows() {
    let (srv, _dir) = server(|_| {});
    let mut client = Session::open(&srv).await;
    let (_, mut slow) = client
        .subscribe(1, "iso.slow", latest(), v1::LagPolicy::ResumeOldest)
        .await;
    let (_, mut fast) = client
        .subscribe(2, "iso.fast", latest(), v1::LagPolicy::ResumeOldest)
        .await;

    let publisher = Session::open(&srv).await;
    let mut stream = publisher.publish_stream().await;
    // 3 MiB into the slow topic: more than its 256 KiB ring plus the
    // client's 1.25 MB stream window, so the ring must lap that subscriber.
    const SLOW: u64 = 3072;
    const FAST: u64 = 200;
    let payload = vec![7u8; 1024];
    for i in 0..SLOW {
        stream
            .write_all(&publish_frame("iso.slow", &payload))
            .await
            .unwrap();
        if i % (SLOW / FAST) == 0 {
            stream
                .write_all(&publish_frame("iso.fast", b"f"))
                .await
                .unwrap();
        }
    }
    let fast_published = SLOW.div_ceil(SLOW / FAST);
    // The fast subscription receives everything, in order, while the slow
    // one is not read at all.
    for want in 0..fast_published {
        match next_delivery(&mut fast).await {
            delivery::Kind::Message(m) => assert_eq!(m.seq, want),
            other => panic!("fast subscription got {other:?}"),
        }
    }
    // Now read the slow one: messages, at least one LAPPED resync, and
    // delivered + missed == published, with no gap unaccounted for.
    let (mut next, mut delivered, mut missed, mut resyncs) = (0u64, 0u64, 0u64, 0u64);
    while next < SLOW {
        match next_delivery(&mut slow).await {
            delivery::Kind::Message(m) => {
                assert_eq!(m.seq, next, "gap without a resync");
                delivered += 1;
                next += 1;
            }
            delivery::Kind::Resync(r) => {
                assert_eq!(r.reason, ResyncReason::Lapped as i32);
                assert_eq!(r.resume_seq, next + r.missed);
                missed += r.missed;
                resyncs += 1;
                next = r.resume_seq;
            }
            delivery::Kind::Joined(j) => panic!("a subscription to one topic joined {j:?}"),
            delivery::Kind::Left(l) => panic!("a subscription to one topic left {l:?}"),
        }
    }
    assert!(resyncs >= 1, "the slow subscriber must have been lapped");
    assert_eq!(delivered + missed, SLOW);
    let stats = srv.registry().stats("iso.slow").unwrap();
    assert_eq!(stats.messages_missed, missed);
    assert_eq!(stats.resyncs_sent, resyncs);
    srv.shutdown().await;
}

#[tokio::test]
async fn resume_replays_after_the_last_seq_and_reports_epoch_change() {
    let (srv, _dir) = server(|_| {});
    let publisher = Session::open(&srv).await;
    let mut stream = publisher.publish_stream().await;
    for i in 0..10u8 {
        stream
            .write_all(&publish_frame("resume.t", &[i]))
            .await
            .unwrap();
    }
    // Wait until all ten are in.
    let mut probe = Session::open(&srv).await;
    let (_, mut all) = probe
        .subscribe(1, "resume.t", raw::oldest(), v1::LagPolicy::ResumeOldest)
        .await;
    for _ in 0..10 {
        next_delivery(&mut all).await;
    }
    let epoch = srv.epoch_of("resume.t").unwrap();

    let mut sub = Session::open(&srv).await;
    let after = |epoch, seq| start_position::Kind::After(start_position::After { epoch, seq });
    let (ok, mut frames) = sub
        .subscribe(1, "resume.t", after(epoch, 6), v1::LagPolicy::ResumeOldest)
        .await;
    assert_eq!(ok.start_seq, 7);
    for want in 7..10 {
        assert!(
            matches!(next_delivery(&mut frames).await, delivery::Kind::Message(m) if m.seq == want)
        );
    }
    // Another epoch (e.g. from before a restart): told so, from seq 0.
    let (ok, mut frames) = sub
        .subscribe(
            2,
            "resume.t",
            after(epoch ^ 0xdead, 6),
            v1::LagPolicy::ResumeOldest,
        )
        .await;
    assert_eq!(ok.start_seq, 0);
    match next_delivery(&mut frames).await {
        delivery::Kind::Resync(r) => {
            assert_eq!(r.reason, ResyncReason::EpochChanged as i32);
            assert_eq!((r.missed, r.resume_seq, r.epoch), (0, 0, epoch));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(next_delivery(&mut frames).await, delivery::Kind::Message(m) if m.seq == 0));
    srv.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_sends_go_away_then_closes_with_shutting_down() {
    let (srv, _dir) = server(|c| {
        c.shutdown.drain_ms = 300;
        c.shutdown.reconnect_after_ms = 123;
    });
    let mut client = Session::open(&srv).await;
    let (_, _frames) = client
        .subscribe(1, "bye", latest(), v1::LagPolicy::ResumeOldest)
        .await;
    let addr = srv.quic_addr();
    let stopping = tokio::spawn(srv.shutdown());
    match next_response(&mut client.ctl).await {
        control_response::Kind::GoAway(g) => assert_eq!(g.reconnect_after_ms, 123),
        other => panic!("expected GoAway, got {other:?}"),
    }
    // The client does not leave by itself: the server closes it after the drain.
    assert_eq!(
        closed_code(&client.conn).await,
        Some(ErrorCode::ShuttingDown as u64)
    );
    bounded("shutdown completes", stopping).await.unwrap();
    // Nobody listens any more.
    let ep = raw::endpoint(_dir.path().join("cert.pem").as_path(), lapwing_proto::ALPN);
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        ep.connect(addr, "localhost").unwrap(),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "connected to a stopped server"
    );
}

#[tokio::test]
async fn run_stops_when_its_shutdown_future_completes() {
    let dir = tempfile::tempdir().unwrap();
    let config = lapwing_server::Config::for_tests(dir.path());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lapwing_server::run(config, async {
        let _ = rx.await;
    }));
    tx.send(()).unwrap();
    bounded("run returns", server).await.unwrap().unwrap();
}
