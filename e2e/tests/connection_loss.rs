//! What a lost connection may and may not cost: a reconnect resumes every
//! subscription without a silent gap, even under a consumer that is not
//! reading, and fire-and-forget publishes dropped by a failed write are
//! reported by `flush`/`close` instead of vanishing.

mod support;

use lapwing_client::{Client, ClientError, SubscribeOptions};
use support::{bounded, connect, server, until, Ledger};

/// The server-side id of the QUIC connection named `name`, once one of its
/// subscriptions has been sent at least `delivered` messages.
fn connection_named(srv: &lapwing_server::ServerHandle, name: &str, delivered: u64) -> Option<u64> {
    srv.connections()
        .list()
        .iter()
        .map(|c| c.info())
        .find(|c| c.client_name == name && c.subscriptions.iter().any(|s| s.delivered >= delivered))
        .map(|c| c.id)
}

/// The contract across a reconnect: a consumer that is not reading has one
/// event in its buffer (of 1, pushing back: a lapping buffer would count
/// the rest as missed, exactly, without waiting) and the stream reader
/// holds the next one, waiting for room, when an operator closes the
/// connection. After the client reconnects and resumes, every published
/// message arrives once, in order; nothing falls between the two sessions
/// without a resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_loss_under_a_paused_consumer_loses_nothing() {
    const PUBLISHED: u64 = 45;
    let (srv, _dir) = server(|_| {});
    let publisher = connect(&srv).await;
    let mut cfg = support::client_config(&srv);
    cfg.subscription_buffer_events = 1;
    cfg.buffer_overflow = lapwing_client::BufferOverflow::PushBack;
    cfg.client_name = "paused-consumer".into();
    let client = bounded("connect", Client::connect(cfg)).await.unwrap();
    let mut sub = bounded(
        "subscribe",
        client.subscribe("gap.t", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    let (epoch, start) = sub.started_at().unwrap();
    for i in 0..20 {
        publisher
            .publish_acked("gap.t", format!("{i}"))
            .await
            .unwrap();
    }
    // Everything is on its way to the client, which reads none of it.
    let id = until("server sent 20 messages", || {
        connection_named(&srv, "paused-consumer", 20)
    })
    .await;
    assert!(srv.connections().close(id, "test"));
    // The client reconnects and resubscribes by itself; the consumer has
    // still not read anything.
    until("client resubscribed", || {
        connection_named(&srv, "paused-consumer", 0).filter(|&new| new != id)
    })
    .await;
    for i in 20..PUBLISHED {
        publisher
            .publish_acked("gap.t", format!("{i}"))
            .await
            .unwrap();
    }
    let mut ledger = Ledger::starting_at(epoch, start);
    ledger.follow_until(&mut sub, start + PUBLISHED - 1).await;
    ledger.assert_accounting();
    assert_eq!(
        (ledger.delivered, ledger.missed),
        (PUBLISHED, 0),
        "the ring holds everything, so nothing may be missed"
    );
    client.close().await.unwrap();
    srv.shutdown().await;
}

/// Fire-and-forget publishes are at most once, but never silently: when a
/// write fails (here: an operator closed the connection and the client does
/// not reconnect), the bytes it dropped make the next `flush` fail, and
/// `close` fails for drops since then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_fire_and_forget_publishes_fail_flush_and_close() {
    let (srv, _dir) = server(|_| {});
    let mut cfg = support::client_config(&srv);
    cfg.reconnect = false;
    cfg.client_name = "doomed-publisher".into();
    let client = bounded("connect", Client::connect(cfg)).await.unwrap();
    client.publish("drop.t", "before").await.unwrap();
    bounded("flush", client.flush()).await.unwrap();
    let id = until("connection listed", || {
        srv.connections()
            .list()
            .iter()
            .map(|c| c.info())
            .find(|c| c.client_name == "doomed-publisher")
            .map(|c| c.id)
    })
    .await;
    assert!(srv.connections().close(id, "test"));
    // Until the client has noticed the close, a write may still succeed;
    // after that every publish is dropped, and flush says so.
    let err = bounded("a flush that reports the drop", async {
        loop {
            client.publish("drop.t", "after").await.unwrap();
            if let Err(e) = client.flush().await {
                break e;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        matches!(err, ClientError::PublishesDropped { bytes, .. } if bytes > 0),
        "{err}"
    );
    // Reported once: a flush with nothing new dropped is Ok again.
    bounded("flush", client.flush()).await.unwrap();
    client.publish("drop.t", "last").await.unwrap();
    let err = bounded("close", client.close()).await.unwrap_err();
    assert!(matches!(err, ClientError::PublishesDropped { .. }), "{err}");
    srv.shutdown().await;
}
