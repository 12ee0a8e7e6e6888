//! `lapwing topics|connections|stats` against a live server, in-process,
//! through the gRPC Admin API.

mod support;

use lapwing_client::cli::{run, Cli, Io, Parser};
use serde_json::Value;
use support::{bounded, connect, server};

async fn lapwing(args: &[&str]) -> (anyhow::Result<()>, String) {
    lapwing_with_input(args, None).await
}

/// Runs the CLI in-process, with `input` as its standard input if given.
async fn lapwing_with_input(args: &[&str], input: Option<&str>) -> (anyhow::Result<()>, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let cli = Cli::try_parse_from(std::iter::once("lapwing").chain(args.iter().copied()))
        .expect("arguments parse");
    let result = {
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            input: input.map(|i| {
                Box::new(std::io::Cursor::new(i.as_bytes().to_vec()))
                    as Box<dyn std::io::BufRead + Send>
            }),
            color: false,
        };
        bounded(&format!("lapwing {args:?}"), run(cli, &mut io)).await
    };
    (result, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn admin_commands_manage_topics_and_show_stats() {
    let (srv, _dir) = server(|c| c.auth.admin_token = Some("s3cret".into()));
    let grpc = srv.grpc_addr().to_string();
    let admin = |rest: &[&str]| {
        let mut v = rest.to_vec();
        v.extend(["--grpc", &grpc, "--admin-token", "s3cret"]);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let call = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        lapwing(&refs).await
    };

    let (r, out) = call(admin(&[
        "topics",
        "create",
        "cli.t",
        "--ring-bytes",
        "65536",
        "--max-message-bytes",
        "1024",
    ]))
    .await;
    r.unwrap();
    assert!(out.contains("created topic cli.t"), "{out}");
    let client = connect(&srv).await;
    for i in 0..4 {
        client
            .publish_acked("cli.t", format!("m{i}"))
            .await
            .unwrap();
    }

    let (r, out) = call(admin(&["topics", "list", "--json"])).await;
    r.unwrap();
    let topics: Value = serde_json::from_str(&out).unwrap();
    let t = &topics.as_array().unwrap()[0];
    assert_eq!(t["name"], "cli.t");
    assert_eq!(t["head_seq"], 4);
    assert_eq!(t["ring_bytes"], 65536);

    let (r, out) = call(admin(&["topics", "list"])).await;
    r.unwrap();
    assert!(out.starts_with("TOPIC"), "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("cli.t "), "{out}");

    let (r, out) = call(admin(&["topics", "stats", "cli.t"])).await;
    r.unwrap();
    assert!(out.contains("published_messages   4"), "{out}");

    let (r, out) = call(admin(&["connections", "list", "--json"])).await;
    r.unwrap();
    let conns: Value = serde_json::from_str(&out).unwrap();
    assert!(conns
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["transport"] == "quic"));

    let (r, out) = call(admin(&["connections", "list"])).await;
    r.unwrap();
    assert!(out.starts_with("ID"), "{out}");
    assert!(out.contains(" quic "), "{out}");

    let (r, out) = call(admin(&["stats"])).await;
    r.unwrap();
    assert!(out.contains("limits: max message"), "{out}");
    assert!(out.contains("published 4"), "{out}");

    let (r, out) = call(admin(&["stats", "--json"])).await;
    r.unwrap();
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["published_messages"], 4);
    assert_eq!(s["server"]["grpc_listen"], grpc.as_str());

    let (r, out) = call(admin(&[
        "stats",
        "--watch",
        "--interval-ms",
        "100",
        "--count",
        "2",
        "--json",
    ]))
    .await;
    r.unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");

    let (r, out) = call(admin(&["topics", "delete", "cli.t"])).await;
    r.unwrap();
    assert!(out.contains("deleted topic cli.t"));
    let (r, _) = call(admin(&["topics", "stats", "cli.t"])).await;
    assert!(format!("{:#}", r.unwrap_err()).contains("NOT_FOUND"));

    // Without the admin token: a clear error.
    let (r, _) = lapwing(&["topics", "list", "--grpc", &grpc]).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(
        e.contains("UNAUTHENTICATED") && e.contains("--admin-token"),
        "{e}"
    );
    srv.shutdown().await;
}

/// The admin token never crosses a network in plaintext: a non-loopback
/// host gets TLS without being asked (here it fails at once, reading the
/// CA file it would trust, before any packet is sent), and an explicit
/// `http://` address off loopback is refused with the reason and the flag.
/// 192.0.2.1 is a documentation address; nothing is ever sent to it.
#[tokio::test]
async fn admin_cli_uses_tls_off_loopback_and_refuses_plaintext_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let missing = missing.to_str().unwrap();
    let (result, out) = lapwing(&[
        "--ca",
        missing,
        "topics",
        "list",
        "--grpc",
        "192.0.2.1:7401",
        "--admin-token",
        "s3cret",
    ])
    .await;
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("over TLS") && err.contains(missing), "{err}");
    assert!(out.is_empty());

    let (result, _) = lapwing(&[
        "connections",
        "list",
        "--grpc",
        "http://192.0.2.1:7401",
        "--admin-token",
        "s3cret",
    ])
    .await;
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(err.contains("admin token in plaintext"), "{err}");
    assert!(err.contains("--grpc-tls"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test]
async fn auth_hash_and_check_explain_the_principals() {
    // The hash the CLI prints is the one the server accepts.
    let (r, hash) = lapwing_with_input(&["auth", "hash"], Some("ticker-secret\n")).await;
    r.unwrap();
    let hash = hash.trim().to_owned();
    assert_eq!(hash.len(), 64, "{hash}");
    let (r, _) = lapwing_with_input(&["auth", "hash"], Some("")).await;
    assert!(r.unwrap_err().to_string().contains("no token"));

    let (srv, _dir) = server(|c| {
        c.auth.admin_token = Some("root".into());
        c.principals = vec![lapwing_server::config::PrincipalConfig {
            name: "ticker".into(),
            token_sha256: Some(hash.clone()),
            subscribe: lapwing_server::config::RulesConfig {
                allow: vec!["prices.>".into()],
                deny: vec!["prices.internal".into()],
            },
            ..Default::default()
        }];
    });
    let mut cfg = support::client_config(&srv);
    cfg.token = Some("ticker-secret".into());
    bounded("connect", lapwing_client::Client::connect(cfg))
        .await
        .expect("the printed hash names the principal");

    let grpc = srv.grpc_addr().to_string();
    let check = |action: &'static str, topic: &'static str| {
        let grpc = grpc.clone();
        async move {
            let args = [
                "auth",
                "check",
                "--principal",
                "ticker",
                action,
                topic,
                "--grpc",
                &grpc,
                "--admin-token",
                "root",
            ];
            let (r, out) = lapwing(&args).await;
            r.unwrap();
            out
        }
    };
    let out = check("subscribe", "prices.eur").await;
    assert!(
        out.starts_with("allowed") && out.contains("allow rule `prices.>`"),
        "{out}"
    );
    let out = check("subscribe", "prices.eur.*").await;
    assert!(out.starts_with("allowed"), "a covered wildcard: {out}");
    let out = check("subscribe", "prices.internal").await;
    assert!(
        out.starts_with("denied") && out.contains("deny rule `prices.internal`"),
        "{out}"
    );
    let out = check("subscribe", "prices.*").await;
    assert!(
        out.starts_with("denied") && out.contains("deny rule `prices.internal`"),
        "a wildcard that could reach a denied topic: {out}"
    );
    let out = check("publish", "prices.eur").await;
    assert!(out.contains("no allow rule matches"), "{out}");
    srv.shutdown().await;
}
