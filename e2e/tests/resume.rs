//! Resume after `{epoch, seq}`: replay of what the ring still holds, an
//! exact resync for the rest, and a server restart (new epoch) that the
//! client rides out by itself.

mod support;

use lapwing_client::{Client, Event, ResyncReason, Start, SubscribeOptions};
use support::{bounded, connect, next_event, server, server_in, Ledger};

fn after(epoch: u64, seq: u64) -> SubscribeOptions {
    SubscribeOptions {
        start: Start::After { epoch, seq },
        ..Default::default()
    }
}

fn small_ring(cfg: &mut lapwing_server::Config) {
    cfg.topic_defaults.ring_bytes = 16 * 1024;
    cfg.limits.max_message_bytes = 4096;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_what_the_ring_still_holds() {
    let (srv, _dir) = server(small_ring);
    let publisher = connect(&srv).await;
    let first = connect(&srv).await;
    let mut sub = bounded(
        "subscribe",
        first.subscribe("res.a", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let (epoch, start) = sub.started_at().unwrap();
    for i in 0..5 {
        publisher
            .publish_acked("res.a", format!("{i}"))
            .await
            .unwrap();
    }
    let mut ledger = Ledger::starting_at(epoch, start);
    ledger.follow_until(&mut sub, 4).await;
    // The subscriber goes away; three more messages are published.
    first.close().await.unwrap();
    drop(sub);
    for i in 5..8 {
        publisher
            .publish_acked("res.a", format!("{i}"))
            .await
            .unwrap();
    }
    // It comes back and resumes after the last seq it saw.
    let second = connect(&srv).await;
    let mut sub = bounded("resubscribe", second.subscribe("res.a", after(epoch, 4)))
        .await
        .unwrap();
    assert_eq!(sub.started_at(), Some((epoch, 5)));
    for want in 5..8u64 {
        match next_event(&mut sub).await {
            Event::Message { seq, payload, .. } => {
                assert_eq!(seq, want);
                assert_eq!(payload, want.to_string().as_bytes());
            }
            other => panic!("expected replay of seq {want}, got {other:?}"),
        }
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_past_the_ring_gets_an_exact_not_retained_resync() {
    let (srv, _dir) = server(small_ring);
    let publisher = connect(&srv).await;
    let epoch = publisher.publish_acked("res.b", "0").await.unwrap().epoch;
    // Far more than the ring holds (~7 KiB of 1 KiB messages).
    let mut last = 0;
    for _ in 0..100 {
        last = publisher
            .publish_acked("res.b", vec![b'x'; 1024])
            .await
            .unwrap()
            .seq;
    }
    let client = connect(&srv).await;
    let mut sub = bounded("resubscribe", client.subscribe("res.b", after(epoch, 0)))
        .await
        .unwrap();
    let first = next_event(&mut sub).await;
    let Event::Resync {
        missed,
        resume_seq,
        reason,
        epoch: resync_epoch,
        ..
    } = first
    else {
        panic!("expected a resync first, got {first:?}");
    };
    assert_eq!(reason, ResyncReason::NotRetained);
    assert_eq!(resync_epoch, epoch);
    assert_eq!(missed, resume_seq - 1, "seqs 1..resume_seq are gone");
    assert!(resume_seq > 1 && resume_seq <= last);
    let mut ledger = Ledger::starting_at(epoch, 1);
    ledger.record(&first);
    ledger.follow_until(&mut sub, last).await;
    ledger.assert_accounting();
    assert_eq!(ledger.delivered + ledger.missed, last);
    assert_eq!(ledger.resyncs.len(), 1);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_in_another_epoch_restarts_the_count_at_zero() {
    let (srv, _dir) = server(|_| {});
    let publisher = connect(&srv).await;
    let ack = publisher.publish_acked("res.c", "a").await.unwrap();
    publisher.publish_acked("res.c", "b").await.unwrap();
    let client = connect(&srv).await;
    let stale = ack.epoch.wrapping_add(1);
    let mut sub = bounded("subscribe", client.subscribe("res.c", after(stale, 41)))
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut sub).await,
        Event::Resync {
            topic: "res.c".into(),
            missed: 0,
            resume_seq: 0,
            reason: ResyncReason::EpochChanged,
            epoch: ack.epoch,
        },
        "the ring holds everything since seq 0, so nothing is missed"
    );
    for want in 0..2u64 {
        assert!(matches!(next_event(&mut sub).await, Event::Message { seq, .. } if seq == want));
    }
    srv.shutdown().await;
}

/// The server stops (GoAway + close) and starts again on the same data dir
/// and port with new epochs. The client reconnects by itself; its
/// subscription reports the epoch change as a resync and continues; its
/// publishes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_is_an_epoch_change_and_the_client_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_in(dir.path(), |_| {});
    let addr = srv.quic_addr();
    let client = Client::connect(support::client_config(&srv)).await.unwrap();
    let mut sub = bounded(
        "subscribe",
        client.subscribe("restart.t", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let (old_epoch, start) = sub.started_at().unwrap();
    for i in 0..3 {
        client
            .publish_acked("restart.t", format!("before {i}"))
            .await
            .unwrap();
    }
    let mut ledger = Ledger::starting_at(old_epoch, start);
    ledger.follow_until(&mut sub, start + 2).await;

    bounded("shutdown", srv.shutdown()).await;
    // quinn releases the UDP port when its endpoint driver task ends, just
    // after shutdown returns: retry the bind briefly.
    let mut attempts = 0;
    let srv = loop {
        let mut cfg = lapwing_server::Config::for_tests(dir.path());
        cfg.listen.quic = addr;
        match lapwing_server::spawn(cfg) {
            Ok(srv) => break srv,
            Err(e) if attempts < 100 && format!("{e:?}").contains("AddrInUse") => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("restart on {addr}: {e:?}"),
        }
    };
    assert_eq!(srv.quic_addr(), addr);

    // The same client publishes again once it has reconnected (the acked
    // publish waits for the new connection).
    let ack = bounded("publish after restart", async {
        loop {
            match client.publish_acked("restart.t", "after").await {
                Ok(ack) => break ack,
                // In flight while the old connection died: retry.
                Err(lapwing_client::ClientError::ConnectionLost) => continue,
                Err(e) => panic!("publish after restart: {e}"),
            }
        }
    })
    .await;
    assert_ne!(ack.epoch, old_epoch, "a restarted server has a new epoch");
    assert_eq!(Some(ack.epoch), srv.epoch_of("restart.t"));

    let resync = next_event(&mut sub).await;
    match &resync {
        Event::Resync {
            reason: ResyncReason::EpochChanged,
            epoch,
            missed,
            resume_seq,
            ..
        } => {
            assert_eq!(*epoch, ack.epoch);
            assert_eq!(missed, resume_seq);
        }
        other => panic!("expected an epoch-change resync, got {other:?}"),
    }
    ledger.record(&resync);
    ledger.follow_until(&mut sub, ack.seq).await;
    ledger.assert_accounting();
    assert_eq!(ledger.epoch, Some(ack.epoch));
    client.close().await.unwrap();
    srv.shutdown().await;
}
