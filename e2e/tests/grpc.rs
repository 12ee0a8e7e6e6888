//! The gRPC edge end to end, with a tonic client: the Bus contract (round
//! trip, QUIC <-> gRPC on one topic, exact resyncs for a slow reader, a
//! path that stalls and then resets),
//! Admin auth and stats, health and reflection, TLS.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lapwing_client::{Event, SubscribeOptions};
use lapwing_proto::v1::admin_client::AdminClient;
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{
    delivery, start_position, CloseConnectionRequest, CreateTopicRequest, Delivery,
    GetTopicRequest, LagPolicy, ListConnectionsRequest, ListTopicsRequest, PublishRequest,
    ResyncReason, ServerInfoRequest, StartPosition, SubscribeRequest, WatchStatsRequest,
};
use support::{bounded, channel, connect, server, with_token};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

fn oldest() -> Option<StartPosition> {
    Some(StartPosition {
        kind: Some(start_position::Kind::Oldest(start_position::Oldest {})),
    })
}

async fn publish(bus: &mut BusClient<Channel>, topic: &str, payload: &str) -> (u64, u64) {
    let ack = bounded(
        "publish",
        bus.publish(PublishRequest {
            topic: topic.into(),
            payload: Bytes::from(payload.to_owned()),
        }),
    )
    .await
    .expect("publish acked")
    .into_inner();
    (ack.epoch, ack.seq)
}

async fn next_delivery(stream: &mut Streaming<Delivery>) -> delivery::Kind {
    bounded("next delivery", stream.message())
        .await
        .expect("stream healthy")
        .expect("stream open")
        .kind
        .expect("delivery has a kind")
}

/// A gRPC subscriber's view, checked item by item against the contract.
#[derive(Debug, Default)]
struct Ledger {
    start: u64,
    next: u64,
    delivered: u64,
    missed: u64,
    resyncs: Vec<lapwing_proto::v1::Resync>,
}

impl Ledger {
    fn starting_at(seq: u64) -> Ledger {
        Ledger {
            start: seq,
            next: seq,
            ..Ledger::default()
        }
    }

    fn record(&mut self, kind: &delivery::Kind) {
        match kind {
            delivery::Kind::Message(m) => {
                assert_eq!(m.seq, self.next, "gap or duplicate without a resync");
                self.delivered += 1;
                self.next = m.seq + 1;
            }
            delivery::Kind::Resync(r) => {
                assert_eq!(r.resume_seq, self.next + r.missed, "resync does not add up");
                self.missed += r.missed;
                self.next = r.resume_seq;
                self.resyncs.push(r.clone());
            }
            // A topic of a wildcard subscription: its accounting starts here.
            delivery::Kind::Joined(j) => *self = Ledger::starting_at(j.start_seq),
            delivery::Kind::Left(l) => panic!("a ledger of one topic: {l:?}"),
        }
    }
}

async fn subscribe(
    bus: &mut BusClient<Channel>,
    topic: &str,
    start: Option<StartPosition>,
) -> (Streaming<Delivery>, u64, u64) {
    let response = bounded(
        "subscribe",
        bus.subscribe(SubscribeRequest {
            topic: topic.into(),
            start,
            lag_policy: LagPolicy::ResumeOldest as i32,
            ..Default::default()
        }),
    )
    .await
    .expect("subscribed");
    let md = response.metadata();
    let num = |k: &str| -> u64 { md.get(k).unwrap().to_str().unwrap().parse().unwrap() };
    let (epoch, start_seq) = (num("lapwing-epoch"), num("lapwing-start-seq"));
    (response.into_inner(), epoch, start_seq)
}

#[tokio::test]
async fn publish_and_subscribe_round_trip() {
    let (srv, _dir) = server(|_| {});
    let mut bus = BusClient::new(channel(&srv).await);
    let (mut stream, epoch, start) = subscribe(&mut bus, "orders.eu", None).await;
    assert_eq!(start, 0);
    for i in 0..10 {
        let (e, seq) = publish(&mut bus, "orders.eu", &format!("m{i}")).await;
        assert_eq!((e, seq), (epoch, i));
    }
    let batch: Vec<PublishRequest> = (10..15)
        .map(|i| PublishRequest {
            topic: "orders.eu".into(),
            payload: Bytes::from(format!("m{i}")),
        })
        .collect();
    let summary = bounded(
        "publish stream",
        bus.publish_stream(futures::stream::iter(batch)),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(summary.published, 5);
    assert_eq!(summary.last.unwrap().seq, 14);
    for i in 0..15u64 {
        match next_delivery(&mut stream).await {
            delivery::Kind::Message(m) => {
                assert_eq!((m.seq, m.epoch), (i, epoch));
                assert_eq!(m.payload, Bytes::from(format!("m{i}")));
                assert!(m.publish_time_unix_nanos > 0);
            }
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    // Typed errors: bad topic, oversize payload.
    let err = bus
        .publish(PublishRequest {
            topic: "bad..topic".into(),
            payload: Bytes::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.metadata().get("lapwing-error-code").unwrap(), "6");
    let err = bus
        .publish(PublishRequest {
            topic: "orders.eu".into(),
            payload: Bytes::from(vec![0u8; 64 * 1024 + 1]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.metadata().get("lapwing-error-code").unwrap(), "5");
    drop(stream);
    srv.shutdown().await;
}

#[tokio::test]
async fn quic_and_grpc_share_one_topic() {
    let (srv, _dir) = server(|_| {});
    let quic = connect(&srv).await;
    let mut bus = BusClient::new(channel(&srv).await);

    // QUIC publishes, gRPC subscribes.
    let (mut grpc_sub, epoch, _) = subscribe(&mut bus, "mixed", None).await;
    let mut quic_sub = bounded(
        "quic subscribe",
        quic.subscribe("mixed", SubscribeOptions::default()),
    )
    .await
    .unwrap();
    for i in 0..5u64 {
        let ack = bounded("quic publish", quic.publish_acked("mixed", format!("q{i}")))
            .await
            .unwrap();
        assert_eq!((ack.epoch, ack.seq), (epoch, i));
    }
    // gRPC publishes, QUIC subscribes (and sees the QUIC ones too).
    for i in 5..10u64 {
        assert_eq!(
            publish(&mut bus, "mixed", &format!("g{i}")).await,
            (epoch, i)
        );
    }
    for i in 0..10u64 {
        let delivery::Kind::Message(m) = next_delivery(&mut grpc_sub).await else {
            panic!("resync on an idle topic")
        };
        assert_eq!((m.epoch, m.seq), (epoch, i));
        let Event::Message {
            epoch: e,
            seq,
            payload,
            ..
        } = support::next_event(&mut quic_sub).await
        else {
            panic!("resync on an idle topic")
        };
        assert_eq!((e, seq), (epoch, i));
        assert_eq!(payload, m.payload, "same bytes on both edges");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn slow_grpc_subscriber_gets_exact_resyncs() {
    let (srv, _dir) = server(|_| {});
    let mut admin = AdminClient::new(channel(&srv).await);
    // A small ring: 8 KiB, messages up to 1 KiB.
    bounded(
        "create topic",
        admin.create_topic(CreateTopicRequest {
            name: "slow".into(),
            ring_bytes: 8 * 1024,
            max_message_bytes: 1024,
        }),
    )
    .await
    .unwrap();
    // Its own connection, so the publisher is not held back by it.
    let mut sub_bus = BusClient::new(channel(&srv).await);
    let (mut stream, _, start) = subscribe(&mut sub_bus, "slow", None).await;
    // Far more than HTTP/2 windows and socket buffers can hold (20 MiB),
    // while the subscriber reads nothing.
    const N: u64 = 20_000;
    let payload = Bytes::from(vec![7u8; 1024]);
    let mut bus = BusClient::new(channel(&srv).await);
    let stream_of = futures::stream::iter((0..N).map(move |_| PublishRequest {
        topic: "slow".into(),
        payload: payload.clone(),
    }));
    let summary = tokio::time::timeout(Duration::from_secs(120), bus.publish_stream(stream_of))
        .await
        .expect("publishing finishes")
        .unwrap()
        .into_inner();
    assert_eq!(summary.published, N);
    let mut ledger = Ledger::starting_at(start);
    while ledger.next < N {
        let kind = next_delivery(&mut stream).await;
        ledger.record(&kind);
    }
    assert_eq!((ledger.start, ledger.next), (0, N));
    assert_eq!(
        ledger.delivered + ledger.missed,
        ledger.next - ledger.start,
        "delivered + missed == published"
    );
    assert!(
        !ledger.resyncs.is_empty() && ledger.missed > 0,
        "a 20 MiB burst through an 8 KiB ring must lap an idle reader"
    );
    assert!(ledger
        .resyncs
        .iter()
        .all(|r| r.reason == ResyncReason::Lapped as i32));

    // The admin API saw the same thing.
    let t = admin
        .get_topic(GetTopicRequest {
            name: "slow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.head_seq, N);
    assert_eq!(t.published_messages, N);
    assert_eq!(t.messages_missed, ledger.missed);
    assert_eq!(t.resyncs_sent, ledger.resyncs.len() as u64);
    assert_eq!(t.subscribers, 1);
    assert_eq!((t.ring_bytes, t.max_message_bytes), (8 * 1024, 1024));
    let conns = admin
        .list_connections(ListConnectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .connections;
    let sub = conns
        .iter()
        .flat_map(|c| c.subscriptions.iter().map(move |s| (c, s)))
        .find(|(_, s)| s.topic == "slow")
        .expect("the subscription is listed");
    assert_eq!(sub.0.transport, "grpc");
    assert_eq!(sub.1.delivered, ledger.delivered);
    assert_eq!(sub.1.missed, ledger.missed);
    assert_eq!((sub.1.next_seq, sub.1.lag), (N, 0));
    drop(stream);
    srv.shutdown().await;
}

/// A gRPC subscriber behind a TCP path that stalls and then resets
/// (`lapwing_e2e::tcp_relay`), the gRPC side of the fault tests: while the
/// path is stalled the publisher and a direct subscriber of the same topic
/// carry on untouched and the ring moves past the stalled one; the reset
/// ends its connection on the server too; it resubscribes after the last
/// message it got, and a NOT_RETAINED resync accounts exactly for what the
/// ring no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_then_reset_grpc_path_resumes_exactly() {
    use lapwing_e2e::tcp_relay::TcpRelay;

    let (srv, _dir) = server(|_| {});
    let mut admin = AdminClient::new(channel(&srv).await);
    // 1 MiB of ring: 256 of the 4 KiB messages below, so the 2 000 sent
    // while the path is stalled certainly move the ring past the stalled
    // subscriber, while the direct one (reading as they come) keeps up.
    const RING: u64 = 1024 * 1024;
    bounded(
        "create topic",
        admin.create_topic(CreateTopicRequest {
            name: "stall".into(),
            ring_bytes: RING,
            max_message_bytes: 8 * 1024,
        }),
    )
    .await
    .unwrap();
    let relay = TcpRelay::start(srv.grpc_addr()).await.unwrap();
    let through_relay = || async {
        let url = format!("http://{}", relay.addr());
        let ch = bounded(
            "connect through the relay",
            Channel::from_shared(url).unwrap().connect(),
        )
        .await
        .expect("gRPC channel through the relay");
        BusClient::new(ch)
    };
    let mut far_bus = through_relay().await;
    let (mut far, epoch, start) = subscribe(&mut far_bus, "stall", oldest()).await;
    let mut near_bus = BusClient::new(channel(&srv).await);
    let (mut near, _, _) = subscribe(&mut near_bus, "stall", oldest()).await;
    let (mut far_ledger, mut near_ledger) =
        (Ledger::starting_at(start), Ledger::starting_at(start));
    let subscribers_of = |srv: &lapwing_server::ServerHandle| {
        srv.connections()
            .list()
            .iter()
            .flat_map(|c| c.info().subscriptions)
            .filter(|s| s.topic == "stall")
            .count()
    };
    assert_eq!(subscribers_of(&srv), 2);

    let mut bus = BusClient::new(channel(&srv).await);
    let payload = Bytes::from(vec![5u8; 4096]);
    let send = |n: u64| {
        let payload = payload.clone();
        futures::stream::iter((0..n).map(move |_| PublishRequest {
            topic: "stall".into(),
            payload: payload.clone(),
        }))
    };
    // Before the fault: both get everything.
    const BEFORE: u64 = 100;
    let summary = bounded("publish", bus.publish_stream(send(BEFORE)))
        .await
        .unwrap();
    assert_eq!(summary.into_inner().published, BEFORE);
    while far_ledger.next < BEFORE {
        far_ledger.record(&next_delivery(&mut far).await);
    }
    while near_ledger.next < BEFORE {
        near_ledger.record(&next_delivery(&mut near).await);
    }

    // The stall: publishes in batches, each read by the direct subscriber
    // before the next, so only the stalled path can fall behind.
    relay.stall();
    const DURING: u64 = 2_000;
    for _ in 0..DURING / 100 {
        let summary = bounded("publish during the stall", bus.publish_stream(send(100)))
            .await
            .expect("the publisher is not held up by a stalled subscriber");
        assert_eq!(summary.into_inner().published, 100);
        let head = near_ledger.next + 100;
        while near_ledger.next < head {
            near_ledger.record(&next_delivery(&mut near).await);
        }
    }
    let total = BEFORE + DURING;
    assert_eq!(
        (near_ledger.delivered, near_ledger.missed),
        (total, 0),
        "the direct subscriber is untouched by the stalled one"
    );
    let topic = admin
        .get_topic(GetTopicRequest {
            name: "stall".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topic.head_seq, total);
    assert!(
        topic.oldest_retained_seq > BEFORE,
        "2 000 x 4 KiB through a 1 MiB ring: the stalled subscriber's next \
         message is gone (oldest retained {})",
        topic.oldest_retained_seq
    );

    // The reset: the client's stream fails, and the server lets go of the
    // connection and its subscription.
    relay.reset();
    let ended = bounded("the far stream ends", async {
        loop {
            match far.message().await {
                Ok(Some(d)) => far_ledger.record(&d.kind.expect("delivery has a kind")),
                Ok(None) => break None,
                Err(status) => break Some(status),
            }
        }
    })
    .await;
    assert!(ended.is_some(), "a reset path is an error, not a clean end");
    assert_eq!(far_ledger.next, BEFORE, "nothing crossed the stall");
    bounded("the server drops the reset connection", async {
        while subscribers_of(&srv) != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // Resume after the last message, through the relay again.
    let mut far_bus = through_relay().await;
    let after = Some(StartPosition {
        kind: Some(start_position::Kind::After(start_position::After {
            epoch,
            seq: far_ledger.next - 1,
        })),
    });
    let (mut far, _, _) = subscribe(&mut far_bus, "stall", after).await;
    while far_ledger.next < total {
        far_ledger.record(&next_delivery(&mut far).await);
    }
    assert_eq!(
        far_ledger.delivered + far_ledger.missed,
        total,
        "delivered + missed == published, across the stall and the reset"
    );
    assert_eq!(far_ledger.resyncs.len(), 1);
    let resync = &far_ledger.resyncs[0];
    assert_eq!(resync.reason, ResyncReason::NotRetained as i32);
    assert_eq!(
        (BEFORE + resync.missed, resync.resume_seq),
        (topic.oldest_retained_seq, topic.oldest_retained_seq),
        "the resync names exactly what the ring no longer holds"
    );
    let stats = relay.stats();
    assert_eq!(stats.reset.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(stats.accepted.load(std::sync::atomic::Ordering::Relaxed), 2);
    drop((far, near));
    srv.shutdown().await;
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let (srv, _dir) = server(|c| {
        c.auth.tokens = vec!["data-token".into()];
        c.auth.admin_token = Some("admin-token".into());
    });
    let ch = channel(&srv).await;
    let mut admin = AdminClient::new(ch.clone());
    let err = admin.list_topics(ListTopicsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = admin
        .list_topics(with_token(ListTopicsRequest {}, "data-token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = admin
        .list_topics(with_token(ListTopicsRequest {}, "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    admin
        .list_topics(with_token(ListTopicsRequest {}, "admin-token"))
        .await
        .expect("the admin token is accepted");

    // Data calls: the QUIC rules.
    let mut bus = BusClient::new(ch);
    let req = || PublishRequest {
        topic: "t".into(),
        payload: Bytes::from_static(b"x"),
    };
    assert_eq!(
        bus.publish(req()).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        bus.publish(with_token(req(), "wrong"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    bus.publish(with_token(req(), "data-token"))
        .await
        .expect("data token publishes");
    srv.shutdown().await;
}

#[tokio::test]
async fn admin_stats_connections_and_close() {
    let (srv, _dir) = server(|_| {});
    let mut admin = AdminClient::new(channel(&srv).await);
    let info = admin
        .server_info(ServerInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.grpc_listen, srv.grpc_addr().to_string());
    assert_eq!(info.cert_fingerprint_sha256, srv.cert_fingerprint());
    assert!(!info.grpc_tls, "loopback + auto = plaintext");

    let created = admin
        .create_topic(CreateTopicRequest {
            name: "stats".into(),
            ring_bytes: 0,
            max_message_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.head_seq, 0);
    let again = admin
        .create_topic(CreateTopicRequest {
            name: "stats".into(),
            ring_bytes: 0,
            max_message_bytes: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    // One QUIC and one gRPC subscriber.
    let quic = connect(&srv).await;
    let mut quic_sub = quic
        .subscribe("stats", SubscribeOptions::default())
        .await
        .unwrap();
    let mut bus = BusClient::new(channel(&srv).await);
    let (mut grpc_sub, _, _) = subscribe(&mut bus, "stats", oldest()).await;
    for i in 0..3 {
        publish(&mut bus, "stats", &format!("s{i}")).await;
    }
    for _ in 0..3 {
        next_delivery(&mut grpc_sub).await;
        support::next_event(&mut quic_sub).await;
    }
    let t = admin
        .get_topic(GetTopicRequest {
            name: "stats".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((t.head_seq, t.published_messages, t.subscribers), (3, 3, 2));
    let mut watch = admin
        .watch_stats(WatchStatsRequest {
            interval_ms: 100,
            include_topics: true,
        })
        .await
        .unwrap()
        .into_inner();
    // Delivered counts are recorded per batch, right after it is read;
    // wait (bounded) until a snapshot shows all six deliveries.
    let snap = bounded("stats snapshot", async {
        loop {
            let s = watch.next().await.unwrap().unwrap();
            if s.delivered_messages >= 6 {
                return s;
            }
        }
    })
    .await;
    assert_eq!(snap.published_messages, 3);
    assert_eq!(snap.subscriptions, 2);
    assert!(snap.topic_stats.iter().any(|t| t.name == "stats"));

    let conns = admin
        .list_connections(ListConnectionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .connections;
    let quic_conn = conns
        .iter()
        .find(|c| c.transport == "quic")
        .expect("QUIC connection listed");
    assert_eq!(quic_conn.subscriptions.len(), 1);
    let grpc_sub_conn = conns
        .iter()
        .find(|c| c.transport == "grpc" && c.subscriptions.len() == 1)
        .expect("gRPC subscriber's connection listed");
    assert_eq!(grpc_sub_conn.subscriptions[0].delivered, 3);

    // Closing the gRPC subscriber's connection ends its stream.
    let closed = admin
        .close_connection(CloseConnectionRequest {
            id: grpc_sub_conn.id,
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(closed.closed);
    let end = bounded("stream ends", grpc_sub.message()).await;
    match end {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("expected the stream to end, got {other:?}"),
    }
    // Closing the QUIC connection: the client reconnects and resumes.
    assert!(
        admin
            .close_connection(CloseConnectionRequest {
                id: quic_conn.id,
                reason: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .closed
    );
    let mut bus2 = BusClient::new(channel(&srv).await);
    publish(&mut bus2, "stats", "after-close").await;
    match support::next_event(&mut quic_sub).await {
        Event::Message { seq, .. } => assert_eq!(seq, 3),
        other => panic!("expected seq 3 after the reconnect, got {other:?}"),
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };

    let (srv, _dir) = server(|_| {});
    let ch = channel(&srv).await;
    let mut health = HealthClient::new(ch.clone());
    for service in ["", "lapwing.v1.Bus", "lapwing.v1.Admin"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(ch);
    let ask = |req: MessageRequest| {
        futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(req),
        }])
    };
    let mut replies = reflection
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "lapwing.v1.Bus",
        "lapwing.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let mut replies = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "lapwing.v1.Bus".into(),
        )))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("no descriptor for lapwing.v1.Bus")
    };
    assert!(!files.file_descriptor_proto.is_empty());
    srv.shutdown().await;
}

#[tokio::test]
async fn grpc_tls_with_the_quic_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let (srv, _dir) = server(|c| c.tls.grpc = lapwing_server::config::GrpcTls::On);
    let pem = std::fs::read(srv.cert_pem_path()).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .domain_name("localhost");
    let url = format!("https://{}", srv.grpc_addr());
    let ch = bounded(
        "TLS connect",
        Channel::from_shared(url)
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect(),
    )
    .await
    .expect("TLS channel with the server's certificate");
    let mut bus = BusClient::new(ch);
    assert_eq!(publish(&mut bus, "tls", "x").await.1, 0);
    // Plaintext to a TLS listener fails.
    let lazy = Channel::from_shared(format!("http://{}", srv.grpc_addr()))
        .unwrap()
        .connect_lazy();
    let mut plain = BusClient::new(lazy);
    assert!(plain
        .publish(PublishRequest {
            topic: "tls".into(),
            payload: Bytes::new(),
        })
        .await
        .is_err());
    srv.shutdown().await;
}
