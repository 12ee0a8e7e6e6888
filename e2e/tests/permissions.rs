//! Principals and per-topic permissions, on both edges: allow, deny, deny
//! wins, `{name}`, a wildcard target needing its own grant, Admin for an
//! admin principal, the metric, and that a denial never disturbs the
//! principal's other subscriptions.

mod support;

use bytes::Bytes;
use lapwing_client::{ClientError, Event, SubscribeOptions};
use lapwing_proto::v1::admin_client::AdminClient;
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{ErrorCode, ListTopicsRequest, PublishRequest, SubscribeRequest};
use lapwing_server::config::{PrincipalConfig, RulesConfig};
use lapwing_server::{Config, ServerHandle};
use support::{bounded, client_config, next_event, server};
use tonic::transport::Channel;
use tonic::{Code, Request};

const TICKER: &str = "ticker-secret";
const OPS: &str = "ops-secret";

fn rules(allow: &[&str], deny: &[&str]) -> RulesConfig {
    RulesConfig {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
    }
}

fn principals(c: &mut Config) {
    c.principals = vec![
        PrincipalConfig {
            name: "ticker".into(),
            token_sha256: Some(lapwing_server::auth::hex(&lapwing_server::auth::digest(
                TICKER,
            ))),
            publish: rules(&["prices.>", "inbox.>"], &[]),
            subscribe: rules(&["prices.*", "inbox.{name}.>"], &["prices.internal"]),
            ..Default::default()
        },
        PrincipalConfig {
            name: "ops".into(),
            token: Some(OPS.into()),
            admin: true,
            ..Default::default()
        },
    ];
}

fn code_of(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test]
async fn quic_allow_deny_and_deny_wins_leave_other_subscriptions_alone() {
    let (srv, _dir) = server(principals);
    let mut cfg = client_config(&srv);
    cfg.token = Some(TICKER.into());
    let client = bounded("connect", lapwing_client::Client::connect(cfg))
        .await
        .expect("ticker connects");
    let mut eur = bounded(
        "subscribe",
        client.subscribe("prices.eur", SubscribeOptions::default()),
    )
    .await
    .expect("prices.* allows prices.eur");

    // Deny wins over the allow rule prices.*.
    let denied = bounded(
        "subscribe",
        client.subscribe("prices.internal", SubscribeOptions::default()),
    )
    .await
    .expect_err("deny rule");
    assert_eq!(
        code_of(&denied),
        Some(ErrorCode::PermissionDenied),
        "{denied}"
    );
    assert!(denied.to_string().contains("prices.internal"), "{denied}");
    // Not allowed at all, and {name} expands to the principal.
    for topic in ["orders.eu", "inbox.other.x"] {
        let e = bounded(
            "subscribe",
            client.subscribe(topic, SubscribeOptions::default()),
        )
        .await
        .expect_err(topic);
        assert_eq!(
            code_of(&e),
            Some(ErrorCode::PermissionDenied),
            "{topic}: {e}"
        );
    }
    bounded(
        "subscribe",
        client.subscribe("inbox.ticker.replies", SubscribeOptions::default()),
    )
    .await
    .expect("inbox.{name}.> allows the principal's own inbox");

    // Publishing: allowed and refused, acked.
    let e = bounded("publish", client.publish_acked("orders.eu", "x"))
        .await
        .expect_err("orders.> is not allowed");
    assert_eq!(code_of(&e), Some(ErrorCode::PermissionDenied), "{e}");
    for i in 0..3u64 {
        let ack = bounded(
            "publish",
            client.publish_acked("prices.eur", format!("{i}")),
        )
        .await
        .expect("prices.> allows prices.eur");
        assert_eq!(ack.seq, i);
    }
    // The denials did not disturb the allowed subscription: 0, 1, 2 in order.
    for i in 0..3u64 {
        match next_event(&mut eur).await {
            Event::Message { seq, payload, .. } => {
                assert_eq!((seq, payload), (i, Bytes::from(i.to_string())))
            }
            other => panic!("expected message {i}, got {other:?}"),
        }
    }
    // Nothing was created for a refused topic.
    assert!(srv.registry().get("orders.eu").is_none());
    assert!(srv.registry().get("prices.internal").is_none());

    let metrics = scrape(&srv).await;
    for line in [
        "lapwing_permission_denied_total{action=\"subscribe\"} 3",
        "lapwing_permission_denied_total{action=\"publish\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    srv.shutdown().await;
}

async fn scrape(srv: &ServerHandle) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = bounded("http", tokio::net::TcpStream::connect(srv.http_addr()))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    bounded("scrape", s.read_to_string(&mut out)).await.unwrap();
    out
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn channel(srv: &ServerHandle) -> Channel {
    let url = format!("http://{}", srv.grpc_addr());
    bounded("gRPC connect", Channel::from_shared(url).unwrap().connect())
        .await
        .expect("gRPC channel")
}

#[tokio::test]
async fn grpc_denials_carry_the_code_and_admin_needs_the_permission() {
    let (srv, _dir) = server(principals);
    let ch = channel(&srv).await;
    let mut bus = BusClient::new(ch.clone());
    let publish = |topic: &str| PublishRequest {
        topic: topic.into(),
        payload: Bytes::from_static(b"x"),
    };
    bus.publish(with_token(publish("prices.eur"), TICKER))
        .await
        .expect("allowed");
    let denied = bus
        .publish(with_token(publish("orders.eu"), TICKER))
        .await
        .expect_err("not allowed");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.metadata().get("lapwing-error-code").unwrap(),
        &(ErrorCode::PermissionDenied as i32).to_string()
    );
    assert!(
        denied.message().contains("orders.eu"),
        "{}",
        denied.message()
    );
    let sub = |topic: &str| SubscribeRequest {
        topic: topic.into(),
        ..Default::default()
    };
    let denied = bus
        .subscribe(with_token(sub("prices.internal"), TICKER))
        .await
        .expect_err("deny wins");
    assert_eq!(denied.code(), Code::PermissionDenied);
    bus.subscribe(with_token(sub("prices.eur"), TICKER))
        .await
        .expect("allowed subscribe");
    // No token, or a wrong one: unauthenticated.
    let e = bus
        .publish(publish("prices.eur"))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);

    // Admin: the ops principal may, the ticker may not.
    let mut admin = AdminClient::new(ch);
    admin
        .list_topics(with_token(ListTopicsRequest {}, OPS))
        .await
        .expect("ops has admin = true");
    let e = admin
        .list_topics(with_token(ListTopicsRequest {}, TICKER))
        .await
        .expect_err("ticker is not admin");
    assert_eq!(e.code(), Code::PermissionDenied);
    let metrics = scrape(&srv).await;
    assert!(
        metrics.contains("lapwing_permission_denied_total{action=\"admin\"} 1"),
        "{metrics}"
    );
    srv.shutdown().await;
}

#[test]
fn bad_principals_are_reported_together() {
    let mut c = Config::for_tests(std::path::Path::new("/tmp/unused"));
    c.principals = vec![
        PrincipalConfig {
            name: "a".into(),
            token_sha256: Some("not-hex".into()),
            subscribe: rules(&["prices.>.x"], &[]),
            ..Default::default()
        },
        PrincipalConfig {
            name: "a".into(),
            ..Default::default()
        },
    ];
    let errors = c.validate().unwrap_err().to_string();
    for needle in [
        "principals[0].token_sha256",
        "principals[0].subscribe.allow[0]",
        "principals[1].name",
        "principals[1]: needs exactly one of",
    ] {
        assert!(errors.contains(needle), "missing `{needle}` in\n{errors}");
    }
}
