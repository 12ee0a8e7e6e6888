//! `lapwing-victim`: a client process for the SIGKILL tests
//! (`e2e/tests/kills.rs`). It connects over raw QUIC (quinn and
//! lapwing-proto only, so every byte is deliberate), says Hello, holds
//! `--subs` subscriptions whose streams it never reads, starts `--partial`
//! publish frames of `--frame-bytes` bytes each and sends only the first
//! half of each, then prints `ready` and waits to be killed. It exits by
//! itself after `--linger-secs`, so a test that dies first leaves no
//! process behind for long.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use lapwing_proto::v1::{self, control_request, control_response, start_position};
use lapwing_proto::{encode_frame, FrameCodec};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

/// Every wait before `ready` is bounded by this.
const STEP: Duration = Duration::from_secs(15);

#[derive(Debug)]
struct Args {
    quic: std::net::SocketAddr,
    cert: PathBuf,
    name: String,
    topic: String,
    subs: u64,
    partial: usize,
    frame_bytes: usize,
    linger: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        quic: "127.0.0.1:7400".parse().expect("address"),
        cert: PathBuf::new(),
        name: "victim".into(),
        topic: "kills.victim".into(),
        subs: 1,
        partial: 1,
        frame_bytes: 64 * 1024,
        linger: Duration::from_secs(120),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--quic" => a.quic = value.parse().map_err(|e| bad(&e))?,
            "--cert" => a.cert = value.into(),
            "--name" => a.name = value,
            "--topic" => a.topic = value,
            "--subs" => a.subs = value.parse().map_err(|e| bad(&e))?,
            "--partial" => a.partial = value.parse().map_err(|e| bad(&e))?,
            "--frame-bytes" => a.frame_bytes = value.parse().map_err(|e| bad(&e))?,
            "--linger-secs" => a.linger = Duration::from_secs(value.parse().map_err(|e| bad(&e))?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn endpoint(cert: &std::path::Path) -> Result<quinn::Endpoint, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![lapwing_proto::ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(1024));
    // The idle timeout is the smaller of both sides': 3 s here, so the
    // server notices the killed process 3 s after its last packet (the
    // cleanup path is the one any vanished client takes), and keep-alives
    // keep the living process from idling out.
    transport
        .keep_alive_interval(Some(Duration::from_millis(500)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(3)).map_err(|e| e.to_string())?,
        ));
    client.transport_config(Arc::new(transport));
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))
        .map_err(|e| e.to_string())?;
    ep.set_default_client_config(client);
    Ok(ep)
}

async fn run(a: Args) -> Result<(), String> {
    let ep = endpoint(&a.cert)?;
    let conn = ep
        .connect(a.quic, lapwing_proto::defaults::SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut responses = FramedRead::new(recv, FrameCodec::<v1::ControlResponse>::new(1 << 20));
    let mut buf = BytesMut::new();
    encode_frame(
        &v1::ControlRequest {
            kind: Some(control_request::Kind::Hello(v1::Hello {
                version: lapwing_proto::PROTOCOL_VERSION,
                client_name: a.name.clone(),
                ..Default::default()
            })),
        },
        &mut buf,
    );
    for id in 1..=a.subs {
        encode_frame(
            &v1::ControlRequest {
                kind: Some(control_request::Kind::Subscribe(v1::Subscribe {
                    subscription_id: id,
                    topic: a.topic.clone(),
                    start: Some(v1::StartPosition {
                        kind: Some(start_position::Kind::Latest(
                            start_position::Latest::default(),
                        )),
                    }),
                    ..Default::default()
                })),
            },
            &mut buf,
        );
    }
    send.write_all(&buf).await.map_err(|e| e.to_string())?;
    let mut ok = 0;
    while ok < a.subs + 1 {
        match responses.next().await {
            Some(Ok(v1::ControlResponse {
                kind:
                    Some(control_response::Kind::Welcome(_) | control_response::Kind::SubscribeOk(_)),
            })) => ok += 1,
            other => return Err(format!("unexpected answer: {other:?}")),
        }
    }
    // Publish frames cut in half: the server holds each half until the
    // frame completes, the stream ends, or the connection goes.
    let mut streams = Vec::new();
    for i in 0..a.partial {
        let publish = v1::Publish {
            topic: a.topic.clone(),
            payload: Bytes::from(vec![i as u8; a.frame_bytes]),
        };
        let mut frame = BytesMut::new();
        encode_frame(&publish, &mut frame);
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        s.write_all(&frame[..frame.len() / 2])
            .await
            .map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        streams.push(s);
    }
    println!("ready");
    tokio::time::sleep(a.linger).await;
    drop((streams, send, responses, conn));
    Ok(())
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lapwing-victim: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(async { tokio::time::timeout(STEP + a.linger, run(a)).await }) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("lapwing-victim: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => std::process::ExitCode::FAILURE,
    }
}
