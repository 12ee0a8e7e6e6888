//! The `lapwing` CLI end to end, in-process: the same code as the binary
//! (`lapwing_client::cli::run`) against a real server, output captured.

mod support;

use lapwing_client::cli::Parser as _;
use lapwing_client::cli::{run, Cli, Io};
use lapwing_client::{Event, SubscribeOptions};
use lapwing_server::ServerHandle;
use support::{bounded, connect, next_event, server};

struct Output {
    result: anyhow::Result<()>,
    out: String,
    err: String,
}

/// Runs `lapwing --server ADDR --ca CERT <args>` with `stdin` as input.
async fn lapwing(srv: &ServerHandle, args: &[&str], stdin: Option<&str>) -> Output {
    let addr = srv.quic_addr().to_string();
    let ca = srv.cert_pem_path().display().to_string();
    let mut argv = vec!["--server", &addr, "--ca", &ca];
    argv.extend_from_slice(args);
    lapwing_argv(&argv, stdin).await
}

/// Runs `lapwing <argv>` (global flags included) with `stdin` as input.
async fn lapwing_argv(argv: &[&str], stdin: Option<&str>) -> Output {
    let cli = Cli::try_parse_from(std::iter::once("lapwing").chain(argv.iter().copied()))
        .expect("valid arguments");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let input = stdin.map(|s| {
        Box::new(std::io::Cursor::new(s.as_bytes().to_vec())) as Box<dyn std::io::BufRead + Send>
    });
    let result = {
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            input,
            color: false,
        };
        bounded(&format!("lapwing {argv:?}"), run(cli, &mut io)).await
    };
    Output {
        result,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_ack_then_sub_json_from_oldest() {
    let (srv, _dir) = server(|_| {});
    let p = lapwing(
        &srv,
        &["pub", "cli.a", "hello", "--count", "3", "--ack"],
        None,
    )
    .await;
    p.result.unwrap();
    let epoch = srv.epoch_of("cli.a").unwrap();
    let want: String = (0..3).map(|s| format!("epoch={epoch} seq={s}\n")).collect();
    assert_eq!(p.out, want);

    let s = lapwing(
        &srv,
        &["sub", "cli.a", "--from", "oldest", "--count", "3", "--json"],
        None,
    )
    .await;
    s.result.unwrap();
    let lines = json_lines(&s.out);
    assert_eq!(lines.len(), 3);
    for (seq, v) in lines.iter().enumerate() {
        assert_eq!(v["event"], "message");
        assert_eq!(v["topic"], "cli.a");
        assert_eq!(v["epoch"], epoch);
        assert_eq!(v["seq"], seq as u64);
        assert_eq!(v["payload"], "hello");
        assert_eq!(v["payload_encoding"], "utf8");
        assert_eq!(v["payload_len"], 5);
    }
    assert!(
        s.err
            .contains(&format!("subscribed to cli.a (epoch {epoch}, first seq 0)")),
        "{}",
        s.err
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_stdin_and_size_then_human_sub_from_seq() {
    let (srv, _dir) = server(|_| {});
    lapwing(
        &srv,
        &["pub", "cli.b", "--stdin"],
        Some("one\ntwo\nthree\n"),
    )
    .await
    .result
    .unwrap();
    lapwing(
        &srv,
        &[
            "pub", "cli.b", "--size", "10", "--count", "2", "--rate", "1000",
        ],
        None,
    )
    .await
    .result
    .unwrap();
    // --from SEQ without --epoch: after seq 1 of the current epoch.
    let s = lapwing(&srv, &["sub", "cli.b", "--from", "1", "--count", "3"], None).await;
    s.result.unwrap();
    assert_eq!(
        s.out,
        "cli.b seq=2: three\ncli.b seq=3: 0 ........\ncli.b seq=4: 1 ........\n"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_prints_resyncs_visibly() {
    let (srv, _dir) = server(|cfg| {
        cfg.topic_defaults.ring_bytes = 16 * 1024;
        cfg.limits.max_message_bytes = 4096;
    });
    lapwing(&srv, &["pub", "cli.c", "first", "--ack"], None)
        .await
        .result
        .unwrap();
    lapwing(
        &srv,
        &["pub", "cli.c", "--size", "1024", "--count", "50", "--ack"],
        None,
    )
    .await
    .result
    .unwrap();
    let epoch = srv.epoch_of("cli.c").unwrap().to_string();
    // Resume after seq 0: most of it is gone from the small ring.
    let s = lapwing(
        &srv,
        &[
            "sub", "cli.c", "--from", "0", "--epoch", &epoch, "--count", "1",
        ],
        None,
    )
    .await;
    s.result.unwrap();
    let first = s.out.lines().next().unwrap();
    assert!(
        first.starts_with("!! RESYNC topic=cli.c missed=") && first.contains("reason=not_retained"),
        "{first}"
    );
    let j = lapwing(
        &srv,
        &[
            "sub", "cli.c", "--from", "0", "--epoch", &epoch, "--count", "1", "--json",
        ],
        None,
    )
    .await;
    j.result.unwrap();
    let lines = json_lines(&j.out);
    assert_eq!(lines[0]["event"], "resync");
    assert_eq!(lines[0]["reason"], "not_retained");
    let missed = lines[0]["missed"].as_u64().unwrap();
    let resume = lines[0]["resume_seq"].as_u64().unwrap();
    assert_eq!(resume, 1 + missed);
    assert_eq!(lines[1]["seq"], resume);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors_for_bad_input() {
    let (srv, _dir) = server(|_| {});
    let bad_topic = lapwing(&srv, &["pub", "no spaces", "x"], None).await;
    let msg = format!("{:#}", bad_topic.result.unwrap_err());
    assert!(
        msg.contains("invalid topic") && msg.contains("' '"),
        "{msg}"
    );

    let big = lapwing(&srv, &["pub", "cli.d", "--size", "70000"], None).await;
    let msg = format!("{:#}", big.result.unwrap_err());
    assert!(
        msg.contains("70000 bytes") && msg.contains("65536"),
        "{msg}"
    );

    let nothing = lapwing(&srv, &["pub", "cli.d"], None).await;
    assert!(format!("{:#}", nothing.result.unwrap_err()).contains("nothing to publish"));

    let bad_from = lapwing(&srv, &["sub", "cli.d", "--from", "yesterday"], None).await;
    assert!(format!("{:#}", bad_from.result.unwrap_err()).contains("--from must be"));

    // Wrong pinned fingerprint: the TLS handshake fails with a clear error.
    let addr = srv.quic_addr().to_string();
    let fp = "00".repeat(32);
    let wrong = lapwing_argv(
        &["--server", &addr, "--fingerprint", &fp, "pub", "cli.d", "x"],
        None,
    )
    .await;
    let e = wrong.result.unwrap_err();
    assert!(format!("{e:#}").contains("fingerprint"), "{e:#}");

    // The right one works.
    let fp = srv.cert_fingerprint().to_owned();
    let right = lapwing_argv(
        &[
            "--server",
            &addr,
            "--fingerprint",
            &fp,
            "pub",
            "cli.d",
            "x",
            "--ack",
        ],
        None,
    )
    .await;
    right.result.unwrap();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_small_run_checks_accounting() {
    // A ring that holds the whole run (2000 x 64 B), so that a subscriber
    // slowed down by a busy machine is not lapped and the counts below are
    // exact. With the tests' 256 KiB ring, about one run in five on two
    // loaded cores saw resyncs (accounting still exact, counts not).
    let (srv, _dir) = server(|cfg| cfg.topic_defaults.ring_bytes = 4 << 20);
    let b = lapwing(
        &srv,
        &[
            "bench",
            "--subscribers",
            "3",
            "--count",
            "2000",
            "--size",
            "64",
        ],
        None,
    )
    .await;
    b.result
        .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", b.out, b.err));
    assert!(b.out.contains("published   2000 msgs"), "{}", b.out);
    assert!(b.out.contains("delivered   6000 msgs"), "{}", b.out);
    assert!(b.out.contains("latency us  p50="), "{}", b.out);
    assert!(b.out.contains("accounting  3/3 subscribers"), "{}", b.out);
    srv.shutdown().await;
}

/// `pub --rate` sends each message when it is due, not when the publisher
/// ends: a subscriber sees the first message while the publisher still has
/// seconds of paced messages left to send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_pub_delivers_while_running() {
    let (srv, _dir) = server(|_| {});
    let client = connect(&srv).await;
    let mut sub = client
        .subscribe("cli.paced", SubscribeOptions::default())
        .await
        .expect("subscribed");
    // 40 messages at 10/s: about 4 s of publishing.
    let publisher = tokio::spawn({
        let addr = srv.quic_addr().to_string();
        let ca = srv.cert_pem_path().display().to_string();
        async move {
            let argv = [
                "--server",
                &addr,
                "--ca",
                &ca,
                "pub",
                "cli.paced",
                "--size",
                "8",
                "--count",
                "40",
                "--rate",
                "10",
            ];
            lapwing_argv(&argv, None).await.result
        }
    });
    match next_event(&mut sub).await {
        Event::Message { seq, .. } => assert_eq!(seq, 0),
        other => panic!("expected the first message, got {other:?}"),
    }
    let head = srv.registry().get("cli.paced").expect("topic").head();
    assert!(
        head < 30,
        "the first paced message was delivered only once {head} of 40 were published"
    );
    bounded("paced publisher", publisher)
        .await
        .expect("publisher task")
        .expect("publisher succeeds");
}

/// The README tour's `lapwing pub demo.ticks --count 5 --ack`: with a count
/// and nothing else to publish, the CLI publishes that many generated
/// messages, each payload its number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_count_alone_publishes_numbered_messages() {
    let (srv, _dir) = server(|_| {});
    let p = lapwing(&srv, &["pub", "cli.n", "--count", "5", "--ack"], None).await;
    p.result.unwrap();
    let epoch = srv.epoch_of("cli.n").unwrap();
    let want: String = (0..5).map(|s| format!("epoch={epoch} seq={s}\n")).collect();
    assert_eq!(p.out, want);
    let s = lapwing(
        &srv,
        &["sub", "cli.n", "--from", "oldest", "--count", "5", "--json"],
        None,
    )
    .await;
    s.result.unwrap();
    let payloads: Vec<String> = json_lines(&s.out)
        .iter()
        .map(|v| v["payload"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(payloads, ["0", "1", "2", "3", "4"]);
    srv.shutdown().await;
}

/// `lapwing --help` opens with what the CLI is for, not the crate's blurb.
#[test]
fn help_says_what_the_cli_is_for() {
    let help = Cli::try_parse_from(["lapwing", "--help"])
        .unwrap_err()
        .to_string();
    let first = help.lines().next().unwrap();
    assert!(first.starts_with("Publish to and subscribe to"), "{help}");
    assert!(!help.contains("client library"), "{help}");
}
