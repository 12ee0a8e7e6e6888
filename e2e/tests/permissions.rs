//! Principals and per-topic permissions, on both edges: allow, deny, deny
//! wins, `{name}`, a wildcard target needing its own grant, Admin for an
//! admin principal, the metric, and that a denial never disturbs the
//! principal's other subscriptions.

mod support;

use bytes::Bytes;
use futures::StreamExt;
use lapwing_client::{ClientError, Event, SubscribeOptions};
use lapwing_proto::v1::admin_client::AdminClient;
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{
    CheckPermissionRequest, ErrorCode, ListTopicsRequest, PublishRequest, ReloadPrincipalsRequest,
    SubscribeRequest,
};
use lapwing_server::config::{PrincipalConfig, RulesConfig};
use lapwing_server::{Config, ServerHandle};
use support::{bounded, channel, client_config, next_event, server, with_token};
use tonic::transport::Channel;
use tonic::Code;

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
    // The wildcard grant: `prices.*` is covered by the allow rule but can
    // reach the denied prices.internal; `inbox.ticker.>` is the principal's own.
    let denied = bus
        .subscribe(with_token(sub("prices.*"), TICKER))
        .await
        .expect_err("a wildcard overlapping a deny rule");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        denied.metadata().get("lapwing-error-code").unwrap(),
        &(ErrorCode::PermissionDenied as i32).to_string()
    );
    bus.subscribe(with_token(sub("inbox.ticker.>"), TICKER))
        .await
        .expect("a wildcard inside inbox.{name}.>");
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

/// A config file whose only principal may subscribe to `allow`.
fn write_config(path: &std::path::Path, allow: &str) {
    let hash = lapwing_server::auth::hex(&lapwing_server::auth::digest(TICKER));
    std::fs::write(
        path,
        format!(
            "[[principals]]\nname = \"ticker\"\ntoken_sha256 = \"{hash}\"\n\
             publish = {{ allow = [\">\"] }}\nsubscribe = {{ allow = [\"{allow}\"] }}\n\
             [[principals]]\nname = \"ops\"\ntoken = \"{OPS}\"\nadmin = true\n"
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn a_reload_that_withdraws_a_permission_ends_the_subscription_and_denies_its_resume() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lapwing.toml");
    write_config(&file, "prices.>");
    let mut cfg = Config::from_file(&file).unwrap();
    let test = Config::for_tests(dir.path());
    cfg.listen = test.listen.clone();
    cfg.data_dir = test.data_dir.clone();
    let srv = lapwing_server::spawn(cfg).expect("server starts");

    let mut ccfg = client_config(&srv);
    ccfg.token = Some(TICKER.into());
    let client = bounded("connect", lapwing_client::Client::connect(ccfg))
        .await
        .unwrap();
    let mut eur = bounded(
        "subscribe",
        client.subscribe("prices.eur", SubscribeOptions::default()),
    )
    .await
    .expect("allowed at start");
    bounded("publish", client.publish_acked("prices.eur", "before"))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut eur).await,
        Event::Message { seq: 0, .. }
    ));

    // A broken file: every error reported, the old rules stay.
    std::fs::write(
        &file,
        "[[principals]]\nname = \"\"\ntoken_sha256 = \"xyz\"\n",
    )
    .unwrap();
    let err = srv.reload_principals().unwrap_err().to_string();
    assert!(
        err.contains("principals[0].name") && err.contains("principals[0].token_sha256"),
        "{err}"
    );
    bounded("publish", client.publish_acked("prices.eur", "still"))
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut eur).await,
        Event::Message { seq: 1, .. }
    ));

    // Withdraw prices.>: the live subscription ends with PERMISSION_DENIED.
    write_config(&file, "news.>");
    assert_eq!(srv.reload_principals().unwrap(), 2);
    let ended = loop {
        match bounded("end of subscription", eur.next()).await {
            Some(Ok(Event::Message { .. })) => continue,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(e)) => break e,
            None => panic!("ended without an error"),
        }
    };
    assert_eq!(
        code_of(&ended),
        Some(ErrorCode::PermissionDenied),
        "{ended}"
    );
    // A new subscribe (what a resume after a reconnect sends) is denied.
    let again = bounded(
        "subscribe",
        client.subscribe("prices.eur", SubscribeOptions::default()),
    )
    .await
    .expect_err("withdrawn");
    assert_eq!(code_of(&again), Some(ErrorCode::PermissionDenied));
    bounded(
        "subscribe",
        client.subscribe("news.today", SubscribeOptions::default()),
    )
    .await
    .expect("newly granted on the same connection");

    // The Admin API explains the rule and reloads too.
    let mut admin = AdminClient::new(channel(&srv).await);
    let check = |topic: &str| CheckPermissionRequest {
        principal: "ticker".into(),
        action: "subscribe".into(),
        topic: topic.into(),
    };
    let r = admin
        .check_permission(with_token(check("news.*"), OPS))
        .await
        .unwrap()
        .into_inner();
    assert!(r.allowed, "{}", r.explanation);
    assert!(
        r.explanation.contains("allow rule `news.>`"),
        "{}",
        r.explanation
    );
    let r = admin
        .check_permission(with_token(check("prices.eur"), OPS))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !r.allowed && r.explanation.contains("no allow rule"),
        "{}",
        r.explanation
    );
    write_config(&file, "prices.>");
    let reloaded = admin
        .reload_principals(with_token(ReloadPrincipalsRequest {}, OPS))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.principals, 2);
    bounded(
        "subscribe",
        client.subscribe("prices.eur", SubscribeOptions::default()),
    )
    .await
    .expect("granted again");
    srv.shutdown().await;
}

/// A CA, and a client certificate it signed with `CN=<cn>`: (CA PEM, client
/// certificate PEM, client key PEM).
fn client_pki(cn: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "lapwing test clients");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_client_certificate_names_its_principal_on_both_edges() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = client_pki("sensor-7");
    let (stranger_ca, stranger_cert, stranger_key) = client_pki("sensor-7");
    drop(stranger_ca);
    let write = |name: &str, pem: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let ca_path = write("ca.pem", &ca);
    let cert_path = write("client.pem", &cert);
    let key_path = write("client.key", &key);
    let stranger = lapwing_client::ClientCertificate {
        cert: write("stranger.pem", &stranger_cert),
        key: write("stranger.key", &stranger_key),
    };
    let (srv, _srv_dir) = server(|c| {
        c.tls.client_ca = Some(ca_path.clone());
        c.tls.grpc = lapwing_server::config::GrpcTls::On;
        c.principals = vec![PrincipalConfig {
            name: "sensor".into(),
            cert_subject: Some("CN=sensor-7".into()),
            publish: rules(&["sensors.7.>"], &[]),
            ..Default::default()
        }];
    });

    // QUIC: the certificate alone names the principal.
    let mut cfg = client_config(&srv);
    cfg.client_certificate = Some(lapwing_client::ClientCertificate {
        cert: cert_path.clone(),
        key: key_path.clone(),
    });
    let client = bounded("connect", lapwing_client::Client::connect(cfg))
        .await
        .expect("the certificate authenticates");
    bounded("publish", client.publish_acked("sensors.7.temp", "21.5"))
        .await
        .expect("sensor may publish its own topics");
    let e = bounded("publish", client.publish_acked("sensors.8.temp", "x"))
        .await
        .expect_err("not another sensor's");
    assert_eq!(code_of(&e), Some(ErrorCode::PermissionDenied), "{e}");
    assert!(e.to_string().contains("sensor"), "{e}");

    // Without a certificate, or with one from another CA: no principal.
    let e = bounded(
        "connect",
        lapwing_client::Client::connect(client_config(&srv)),
    )
    .await
    .expect_err("no certificate, no token");
    assert_eq!(code_of(&e), Some(ErrorCode::Unauthenticated), "{e}");
    let mut cfg = client_config(&srv);
    cfg.client_certificate = Some(stranger);
    cfg.reconnect = false;
    assert!(
        bounded("connect", lapwing_client::Client::connect(cfg))
            .await
            .is_err(),
        "a certificate the server's client CA did not sign fails the handshake"
    );

    // gRPC over TLS with the same certificate.
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(srv.cert_pem_path()).unwrap(),
        ))
        .domain_name("localhost")
        .identity(Identity::from_pem(cert, key));
    let ch = bounded(
        "gRPC TLS connect",
        Channel::from_shared(format!("https://{}", srv.grpc_addr()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect(),
    )
    .await
    .expect("gRPC with a client certificate");
    let mut bus = BusClient::new(ch);
    bus.publish(PublishRequest {
        topic: "sensors.7.hum".into(),
        payload: Bytes::from_static(b"40"),
    })
    .await
    .expect("the certificate names the principal on gRPC too");
    let denied = bus
        .publish(PublishRequest {
            topic: "sensors.8.hum".into(),
            payload: Bytes::from_static(b"x"),
        })
        .await
        .expect_err("not another sensor's");
    assert_eq!(denied.code(), Code::PermissionDenied);
    srv.shutdown().await;
}
