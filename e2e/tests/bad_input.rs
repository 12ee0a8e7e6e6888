//! Bad input gets a typed error for the client that sent it, and nobody
//! else notices: in every case another client's subscription (the
//! [`raw::Witness`]) keeps receiving messages with contiguous seqs before
//! and after, and nothing already accepted is lost.

mod raw;

use lapwing_proto::v1::{self, control_request, control_response, delivery, ErrorCode};
use raw::{
    bounded, closed_code, code_of, connect, encode, hello, next_delivery, next_error,
    next_response, oldest, open_control, publish_frame, server, Session, Witness,
};

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(v, &mut out);
    out
}

/// Garbage: a frame whose body is not a valid protobuf message.
fn garbage_frame() -> Vec<u8> {
    let body = [0xff_u8, 0xff, 0xff, 0xff, 0x0f, 0x07, 0x07];
    let mut f = varint(body.len() as u64);
    f.extend_from_slice(&body);
    f
}

#[tokio::test]
async fn garbage_on_a_publish_stream_stops_that_stream_only() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;

    // A subscriber of the bad client's topic, to prove that what the bad
    // client published before the garbage is kept.
    let mut watcher = Session::open(&srv).await;
    let (_, mut seen) = watcher
        .subscribe(7, "bad.garbage", oldest(), v1::LagPolicy::ResumeOldest)
        .await;

    let mut bad = Session::open(&srv).await;
    let mut stream = bad.publish_stream().await;
    let mut bytes = publish_frame("bad.garbage", b"before-1");
    bytes.extend(publish_frame("bad.garbage", b"before-2"));
    bytes.extend(garbage_frame());
    stream.write_all(&bytes).await.unwrap();

    let err = next_error(&mut bad.ctl).await;
    assert_eq!(code_of(&err), ErrorCode::Protocol, "{err:?}");
    let stopped = bounded("stream stopped", stream.stopped()).await.unwrap();
    assert_eq!(
        stopped,
        Some(quinn::VarInt::from_u32(ErrorCode::Protocol as u32))
    );
    for want in [&b"before-1"[..], b"before-2"] {
        match next_delivery(&mut seen).await {
            delivery::Kind::Message(m) => assert_eq!(m.payload, want),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The bad client's connection is still fine.
    bad.ping(1).await;
    let mut again = bad.publish_stream().await;
    again
        .write_all(&publish_frame("bad.garbage", b"after"))
        .await
        .unwrap();
    match next_delivery(&mut seen).await {
        delivery::Kind::Message(m) => assert_eq!(m.payload, &b"after"[..]),
        other => panic!("unexpected {other:?}"),
    }
    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn garbage_on_the_control_stream_closes_that_connection_with_protocol() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;

    let mut bad = Session::open(&srv).await;
    bad.ctl_send.write_all(&garbage_frame()).await.unwrap();
    let err = next_error(&mut bad.ctl).await;
    assert_eq!(code_of(&err), ErrorCode::Protocol, "{err:?}");
    assert_eq!(
        closed_code(&bad.conn).await,
        Some(ErrorCode::Protocol as u64)
    );

    // As the very first frame, before Hello, too.
    let conn2 = connect(&srv).await;
    let (mut send2, recv2) = bounded("open", conn2.open_bi()).await.unwrap();
    send2.write_all(&garbage_frame()).await.unwrap();
    let mut ctl2 = tokio_util::codec::FramedRead::new(
        recv2,
        lapwing_proto::FrameCodec::<v1::ControlResponse>::new(1 << 20),
    );
    let err = next_error(&mut ctl2).await;
    assert_eq!(code_of(&err), ErrorCode::Protocol);
    assert_eq!(closed_code(&conn2).await, Some(ErrorCode::Protocol as u64));

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn length_prefix_over_the_limit_is_refused_before_buffering() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;

    // On a publish stream: the stream is stopped with FRAME_TOO_LARGE, the
    // connection stays.
    let mut bad = Session::open(&srv).await;
    let max = bad.welcome.max_frame_bytes;
    let mut stream = bad.publish_stream().await;
    // Announce 1 TiB; send only the prefix and a few bytes.
    let mut bytes = varint(1 << 40);
    bytes.extend_from_slice(b"abc");
    stream.write_all(&bytes).await.unwrap();
    let err = next_error(&mut bad.ctl).await;
    assert_eq!(code_of(&err), ErrorCode::FrameTooLarge, "{err:?}");
    let stopped = bounded("stream stopped", stream.stopped()).await.unwrap();
    assert_eq!(
        stopped,
        Some(quinn::VarInt::from_u32(ErrorCode::FrameTooLarge as u32))
    );
    // Just over the limit is refused too.
    let mut s2 = bad.publish_stream().await;
    s2.write_all(&varint(max + 1)).await.unwrap();
    assert_eq!(
        code_of(&next_error(&mut bad.ctl).await),
        ErrorCode::FrameTooLarge
    );
    bad.ping(2).await;

    // Before Hello the control stream allows 64 KiB only.
    let conn = connect(&srv).await;
    let (mut send, recv) = bounded("open", conn.open_bi()).await.unwrap();
    send.write_all(&varint(64 * 1024 + 1)).await.unwrap();
    let mut ctl = tokio_util::codec::FramedRead::new(
        recv,
        lapwing_proto::FrameCodec::<v1::ControlResponse>::new(1 << 20),
    );
    assert_eq!(
        code_of(&next_error(&mut ctl).await),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(
        closed_code(&conn).await,
        Some(ErrorCode::FrameTooLarge as u64)
    );

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn oversize_message_is_refused_and_the_stream_goes_on() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;
    let mut bad = Session::open(&srv).await;
    let max = bad.welcome.max_message_bytes as usize;

    // Fire-and-forget: Error on control, the stream stays usable.
    let mut stream = bad.publish_stream().await;
    stream
        .write_all(&publish_frame("big", &vec![1; max + 1]))
        .await
        .unwrap();
    let err = next_error(&mut bad.ctl).await;
    assert_eq!(code_of(&err), ErrorCode::MessageTooLarge, "{err:?}");

    // Acked: a PublishResult error for the big one, acks around it.
    let (mut send, recv) = bounded("open bi", bad.conn.open_bi()).await.unwrap();
    let mut bytes = publish_frame("big", b"small-1");
    bytes.extend(publish_frame("big", &vec![2; max + 1]));
    bytes.extend(publish_frame("big", &vec![3; max]));
    send.write_all(&bytes).await.unwrap();
    let mut results = tokio_util::codec::FramedRead::new(
        recv,
        lapwing_proto::FrameCodec::<v1::PublishResult>::new(1 << 20),
    );
    let mut kinds = Vec::new();
    for _ in 0..3 {
        use futures::StreamExt;
        let r = bounded("publish result", results.next())
            .await
            .unwrap()
            .unwrap();
        kinds.push(r.kind.unwrap());
    }
    use v1::publish_result::Kind;
    let Kind::Ack(first) = &kinds[0] else {
        panic!("{kinds:?}")
    };
    let Kind::Error(e) = &kinds[1] else {
        panic!("{kinds:?}")
    };
    assert_eq!(code_of(e), ErrorCode::MessageTooLarge);
    let Kind::Ack(third) = &kinds[2] else {
        panic!("{kinds:?}")
    };
    assert_eq!(third.seq, first.seq + 1, "the refused message took no seq");
    assert_eq!(Some(first.epoch), srv.epoch_of("big"));

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn invalid_topic_names_are_refused() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;
    let mut bad = Session::open(&srv).await;

    for (id, topic) in [
        (1, "bad..topic"),
        (2, ""),
        (3, "has space"),
        (4, "wi*ld.x"),
        (5, "a.>.b"),
    ] {
        bad.send(control_request::Kind::Subscribe(v1::Subscribe {
            subscription_id: id,
            topic: topic.into(),
            start: None,
            lag_policy: 0,
            ..Default::default()
        }))
        .await;
        let err = next_error(&mut bad.ctl).await;
        assert_eq!(code_of(&err), ErrorCode::InvalidTopic, "{topic:?}: {err:?}");
        assert_eq!(err.subscription_id, id);
    }
    let mut stream = bad.publish_stream().await;
    stream
        .write_all(&publish_frame(".leading", b"x"))
        .await
        .unwrap();
    assert_eq!(
        code_of(&next_error(&mut bad.ctl).await),
        ErrorCode::InvalidTopic
    );
    assert!(srv.registry().get(".leading").is_none());
    // A pattern subscribes; it is no topic to publish to.
    stream
        .write_all(&publish_frame("wild.*", b"x"))
        .await
        .unwrap();
    assert_eq!(
        code_of(&next_error(&mut bad.ctl).await),
        ErrorCode::InvalidTopic
    );
    bad.ping(3).await;

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn unknown_protocol_version_is_refused_with_its_code() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;

    let conn = connect(&srv).await;
    let (_send, mut ctl) = open_control(&conn, &hello(99, "")).await;
    let err = next_error(&mut ctl).await;
    assert_eq!(code_of(&err), ErrorCode::UnsupportedVersion, "{err:?}");
    assert!(err.message.contains("99"), "{err:?}");
    assert_eq!(
        closed_code(&conn).await,
        Some(ErrorCode::UnsupportedVersion as u64)
    );

    // A first frame that is not Hello.
    let conn = connect(&srv).await;
    let ping = v1::ControlRequest {
        kind: Some(control_request::Kind::Ping(v1::Ping { nonce: 1 })),
    };
    let (_send, mut ctl) = open_control(&conn, &ping).await;
    assert_eq!(code_of(&next_error(&mut ctl).await), ErrorCode::Protocol);
    assert_eq!(closed_code(&conn).await, Some(ErrorCode::Protocol as u64));

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn wrong_alpn_fails_the_handshake() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;

    let ep = raw::endpoint(srv.cert_pem_path(), b"h3");
    let result = bounded("connect", ep.connect(srv.quic_addr(), "localhost").unwrap()).await;
    match result {
        Err(quinn::ConnectionError::ConnectionClosed(c)) => {
            // TLS alert no_application_protocol (120) as a crypto error.
            assert_eq!(
                c.error_code,
                quinn::TransportErrorCode::crypto(120),
                "{c:?}"
            );
        }
        other => panic!("handshake with ALPN h3 must fail, got {other:?}"),
    }

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn too_many_subscriptions_refuses_the_extra_one_only() {
    let (srv, _dir) = server(|c| c.limits.max_subscriptions_per_connection = 3);
    let mut witness = Witness::start(&srv, "").await;

    let mut bad = Session::open(&srv).await;
    assert_eq!(bad.welcome.max_subscriptions, 3);
    let mut streams = Vec::new();
    for id in 1..=3 {
        let (_, frames) = bad
            .subscribe(
                id,
                &format!("many.t{id}"),
                oldest(),
                v1::LagPolicy::ResumeOldest,
            )
            .await;
        streams.push(frames);
    }
    bad.send(control_request::Kind::Subscribe(v1::Subscribe {
        subscription_id: 4,
        topic: "many.t4".into(),
        start: None,
        lag_policy: 0,
        ..Default::default()
    }))
    .await;
    let err = next_error(&mut bad.ctl).await;
    assert_eq!(code_of(&err), ErrorCode::TooManySubscriptions, "{err:?}");
    assert_eq!(err.subscription_id, 4);

    // A duplicate id is refused as well.
    bad.send(control_request::Kind::Subscribe(v1::Subscribe {
        subscription_id: 2,
        topic: "many.t2".into(),
        start: None,
        lag_policy: 0,
        ..Default::default()
    }))
    .await;
    assert_eq!(
        code_of(&next_error(&mut bad.ctl).await),
        ErrorCode::InvalidSubscription
    );

    // The three accepted subscriptions work.
    let mut stream = bad.publish_stream().await;
    for id in 1..=3 {
        stream
            .write_all(&publish_frame(&format!("many.t{id}"), b"hi"))
            .await
            .unwrap();
    }
    for frames in &mut streams {
        assert!(matches!(
            next_delivery(frames).await,
            delivery::Kind::Message(m) if m.payload == b"hi"[..]
        ));
    }
    // Unsubscribing frees a place.
    bad.send(control_request::Kind::Unsubscribe(v1::Unsubscribe {
        subscription_id: 1,
    }))
    .await;
    assert!(matches!(
        next_response(&mut bad.ctl).await,
        control_response::Kind::Unsubscribed(u) if u.subscription_id == 1
    ));
    let (ok, _) = bad
        .subscribe(5, "many.t5", oldest(), v1::LagPolicy::ResumeOldest)
        .await;
    assert_eq!(ok.subscription_id, 5);

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthenticated() {
    let (srv, _dir) = server(|c| c.auth.tokens = vec!["right-token".into()]);
    let mut witness = Witness::start(&srv, "right-token").await;

    for token in ["", "wrong-token", "right-toke"] {
        let conn = connect(&srv).await;
        let (_send, mut ctl) = open_control(&conn, &hello(1, token)).await;
        let err = next_error(&mut ctl).await;
        assert_eq!(
            code_of(&err),
            ErrorCode::Unauthenticated,
            "{token:?}: {err:?}"
        );
        assert_eq!(
            closed_code(&conn).await,
            Some(ErrorCode::Unauthenticated as u64)
        );
    }
    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn streams_before_welcome_close_the_connection_and_publish_nothing() {
    let (srv, _dir) = server(|_| {});
    let mut witness = Witness::start(&srv, "").await;

    // A publish stream and no control stream at all.
    let conn = connect(&srv).await;
    let mut uni = bounded("open uni", conn.open_uni()).await.unwrap();
    uni.write_all(&publish_frame("sneaky", b"x")).await.unwrap();
    match bounded("close", conn.closed()).await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), ErrorCode::Protocol as u64);
            assert!(
                String::from_utf8_lossy(&c.reason).contains("before Hello"),
                "closed for the early stream, not by the hello timeout: {c:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(srv.registry().get("sneaky").is_none());

    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_hello_timeout() {
    let (srv, _dir) = server(|c| c.limits.hello_timeout_ms = 300);
    let mut witness = Witness::start(&srv, "").await;
    let conn = connect(&srv).await;
    // No control stream: closed with TIMEOUT when the timeout expires.
    assert_eq!(closed_code(&conn).await, Some(ErrorCode::Timeout as u64));
    // An open control stream but no Hello: the same.
    let conn = connect(&srv).await;
    let (mut send, _recv) = bounded("open", conn.open_bi()).await.unwrap();
    send.write_all(&[]).await.unwrap();
    assert_eq!(closed_code(&conn).await, Some(ErrorCode::Timeout as u64));
    // Half a Hello: the same, and the partial frame holds no slot.
    let conn = connect(&srv).await;
    let (mut send, _recv) = bounded("open", conn.open_bi()).await.unwrap();
    let frame = encode(&hello(1, ""));
    send.write_all(&frame[..frame.len() / 2]).await.unwrap();
    assert_eq!(closed_code(&conn).await, Some(ErrorCode::Timeout as u64));
    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_with_too_many_connections() {
    // The witness uses two connections.
    let (srv, _dir) = server(|c| c.limits.max_connections = 2);
    let mut witness = Witness::start(&srv, "").await;

    // A handshake alone takes no slot: the gate is passed after Hello,
    // and the refusal is an Error frame, then the close code.
    let conn = connect(&srv).await;
    let (_send, mut ctl) = open_control(&conn, &hello(1, "")).await;
    let err = next_error(&mut ctl).await;
    assert_eq!(code_of(&err), ErrorCode::TooManyConnections, "{err:?}");
    assert_eq!(
        closed_code(&conn).await,
        Some(ErrorCode::TooManyConnections as u64)
    );
    witness.check_flowing(5).await;
    srv.shutdown().await;
}

#[test]
fn frame_helpers_are_sane() {
    assert_eq!(varint(300), vec![0xac, 0x02]);
    assert!(encode(&hello(1, "")).len() > 1);
}
