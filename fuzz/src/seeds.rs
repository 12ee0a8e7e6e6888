//! The seed corpus, generated deterministically from real messages.
//!
//! AFL++ mutates these: starting from frames prost really writes (every
//! message type, several frames per stream, the pre-Hello limit's edge),
//! real config files and real topic names, it reaches deep states in
//! seconds instead of rediscovering the protobuf wire format byte by byte.
//! `tests/corpus.rs` checks that `fuzz/corpus/` is exactly what [`all`]
//! returns; `LAPWING_FUZZ_BLESS=1` rewrites it after a change here.

use bytes::{Bytes, BytesMut};
use lapwing_proto::encode_frame;
use lapwing_proto::v1::{self, control_request, control_response, delivery, publish_result};

use crate::frame::{selector, LIMITS};

/// One seed file: `corpus/<target>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target's name (see [`crate::TARGETS`]).
    pub target: &'static str,
    /// The file name.
    pub name: String,
    /// The contents.
    pub bytes: Vec<u8>,
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = frame_seeds();
    seeds.extend(config_seeds());
    seeds.extend(topic_seeds());
    seeds.extend(control_seeds());
    seeds
}

/// How a frame seed feeds its bytes (byte 1 of a `frame` input).
#[derive(Clone, Copy)]
enum Pieces {
    Whole,
    Bytewise,
    Of(u8),
}

fn frame_input<M: prost::Message>(
    type_index: usize,
    limit: usize,
    pieces: Pieces,
    frames: &[M],
) -> Vec<u8> {
    let limit_index = LIMITS
        .iter()
        .position(|&l| l == limit)
        .expect("a limit from frame::LIMITS");
    let piece = match pieces {
        Pieces::Whole => 0,
        Pieces::Bytewise => 1,
        Pieces::Of(n) => n,
    };
    let mut wire = BytesMut::new();
    for f in frames {
        encode_frame(f, &mut wire);
    }
    let mut input = vec![selector(type_index, limit_index), piece];
    input.extend_from_slice(&wire);
    input
}

fn request(kind: control_request::Kind) -> v1::ControlRequest {
    v1::ControlRequest { kind: Some(kind) }
}

fn response(kind: control_response::Kind) -> v1::ControlResponse {
    v1::ControlResponse { kind: Some(kind) }
}

fn start(kind: v1::start_position::Kind) -> Option<v1::StartPosition> {
    Some(v1::StartPosition { kind: Some(kind) })
}

fn frame_seeds() -> Vec<Seed> {
    use control_request::Kind as Req;
    use control_response::Kind as Resp;
    use v1::start_position::{After, Kind as Start, Latest, Oldest};

    let mut seeds = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target: "frame",
            name: name.to_owned(),
            bytes,
        });
    };

    let hello = request(Req::Hello(v1::Hello {
        version: lapwing_proto::PROTOCOL_VERSION,
        token: "secret-token".into(),
        client_name: "lapwing-cli".into(),
    }));
    let subscribe = |id, topic: &str, start, policy: v1::LagPolicy| {
        request(Req::Subscribe(v1::Subscribe {
            subscription_id: id,
            topic: topic.into(),
            start,
            lag_policy: policy as i32,
            ..Default::default()
        }))
    };
    let session = vec![
        hello.clone(),
        subscribe(
            1,
            "prices.eur-usd",
            start(Start::Latest(Latest {})),
            v1::LagPolicy::ResumeOldest,
        ),
        subscribe(
            2,
            "a.b",
            start(Start::Oldest(Oldest {})),
            v1::LagPolicy::SkipToLatest,
        ),
        subscribe(
            3,
            "orders.eu",
            start(Start::After(After {
                epoch: 1_700_000_000,
                seq: 41,
            })),
            v1::LagPolicy::Disconnect,
        ),
        request(Req::Ping(v1::Ping { nonce: 7 })),
        request(Req::Unsubscribe(v1::Unsubscribe { subscription_id: 2 })),
    ];
    add(
        "control-request-hello",
        frame_input(0, 1024, Pieces::Whole, std::slice::from_ref(&hello)),
    );
    add(
        "control-request-session",
        frame_input(0, 1024, Pieces::Whole, &session),
    );
    add(
        "control-request-session-bytewise",
        frame_input(0, 1024, Pieces::Bytewise, &session),
    );
    add(
        "control-request-session-pieces-7",
        frame_input(0, 300, Pieces::Of(7), &session),
    );
    add(
        "control-request-over-limit",
        frame_input(0, 16, Pieces::Whole, &[hello]),
    );
    add(
        "control-request-subscribe-no-start",
        frame_input(
            0,
            1024,
            Pieces::Whole,
            &[subscribe(9, "x", None, v1::LagPolicy::ResumeOldest)],
        ),
    );

    let welcome = response(Resp::Welcome(v1::Welcome {
        version: 1,
        server_name: "lapwing".into(),
        max_message_bytes: 1 << 20,
        max_frame_bytes: (1 << 20) + 512,
        max_subscriptions: 1024,
        connection_id: 12,
    }));
    let error = |code: v1::ErrorCode, msg: &str, id| {
        response(Resp::Error(v1::Error {
            code: code as i32,
            message: msg.into(),
            subscription_id: id,
        }))
    };
    let responses = vec![
        welcome.clone(),
        response(Resp::SubscribeOk(v1::SubscribeOk {
            subscription_id: 1,
            epoch: 3,
            start_seq: 100,
            ..Default::default()
        })),
        error(
            v1::ErrorCode::InvalidTopic,
            "topic name has an empty token at byte 0",
            2,
        ),
        response(Resp::Pong(v1::Pong { nonce: 7 })),
        response(Resp::Unsubscribed(v1::Unsubscribed { subscription_id: 1 })),
        response(Resp::GoAway(v1::GoAway {
            reason: "shutting down".into(),
            reconnect_after_ms: 500,
        })),
    ];
    add(
        "control-response-welcome",
        frame_input(1, 1024, Pieces::Whole, &[welcome]),
    );
    add(
        "control-response-session",
        frame_input(1, 1024, Pieces::Whole, &responses),
    );
    add(
        "control-response-session-pieces-3",
        frame_input(1, 300, Pieces::Of(3), &responses),
    );
    add(
        "control-response-error-too-many",
        frame_input(
            1,
            16,
            Pieces::Whole,
            &[error(v1::ErrorCode::TooManySubscriptions, "", 0)],
        ),
    );

    let publishes: Vec<v1::Publish> = [
        ("a", &b""[..]),
        ("prices.eur-usd", b"1.0842"),
        ("x.y.z", &[0u8, 255, 7, 128][..]),
    ]
    .iter()
    .map(|(topic, payload)| v1::Publish {
        topic: (*topic).into(),
        payload: Bytes::copy_from_slice(payload),
    })
    .collect();
    let big = v1::Publish {
        topic: "bulk".into(),
        payload: Bytes::from(vec![0xAB; 280]),
    };
    add(
        "publish-three",
        frame_input(2, 1024, Pieces::Whole, &publishes),
    );
    add(
        "publish-three-bytewise",
        frame_input(2, 1024, Pieces::Bytewise, &publishes),
    );
    add(
        "publish-near-limit",
        frame_input(2, 300, Pieces::Of(64), std::slice::from_ref(&big)),
    );
    add(
        "publish-over-limit",
        frame_input(2, 16, Pieces::Whole, &[big]),
    );

    let results = vec![
        v1::PublishResult {
            kind: Some(publish_result::Kind::Ack(v1::PublishAck {
                epoch: 5,
                seq: 0,
            })),
        },
        v1::PublishResult {
            kind: Some(publish_result::Kind::Ack(v1::PublishAck {
                epoch: 5,
                seq: u64::MAX,
            })),
        },
        v1::PublishResult {
            kind: Some(publish_result::Kind::Error(v1::Error {
                code: v1::ErrorCode::MessageTooLarge as i32,
                message: "message of 2000000 bytes is over the topic's maximum of 1048576".into(),
                subscription_id: 0,
            })),
        },
    ];
    add(
        "publish-result-acks-and-error",
        frame_input(3, 1024, Pieces::Whole, &results),
    );
    add(
        "publish-result-pieces-5",
        frame_input(3, 300, Pieces::Of(5), &results),
    );

    let headers = [v1::SubscriptionStreamHeader { subscription_id: 1 }];
    add(
        "subscription-header",
        frame_input(4, 1024, Pieces::Whole, &headers),
    );
    add(
        "subscription-header-max-id",
        frame_input(
            4,
            16,
            Pieces::Bytewise,
            &[v1::SubscriptionStreamHeader {
                subscription_id: u64::MAX,
            }],
        ),
    );
    add(
        "subscription-header-empty-limit-0",
        frame_input(
            4,
            0,
            Pieces::Whole,
            &[v1::SubscriptionStreamHeader::default()],
        ),
    );

    let message = |seq, payload: &[u8]| v1::Delivery {
        kind: Some(delivery::Kind::Message(v1::Message {
            seq,
            payload: Bytes::copy_from_slice(payload),
            publish_time_unix_nanos: 1_700_000_000_000_000_000,
            epoch: 42,
            ..Default::default()
        })),
    };
    let resync = |reason: v1::ResyncReason| v1::Delivery {
        kind: Some(delivery::Kind::Resync(v1::Resync {
            missed: 17,
            resume_seq: 318,
            reason: reason as i32,
            epoch: 42,
            ..Default::default()
        })),
    };
    let deliveries = vec![
        message(300, b"hello"),
        message(301, b""),
        resync(v1::ResyncReason::Lapped),
        message(318, &[1, 2, 3]),
        resync(v1::ResyncReason::EpochChanged),
    ];
    add(
        "delivery-stream",
        frame_input(5, 1024, Pieces::Whole, &deliveries),
    );
    add(
        "delivery-stream-bytewise",
        frame_input(5, 1024, Pieces::Bytewise, &deliveries),
    );
    add(
        "delivery-stream-pieces-11",
        frame_input(5, 300, Pieces::Of(11), &deliveries),
    );
    add(
        "delivery-resyncs",
        frame_input(
            5,
            1024,
            Pieces::Whole,
            &[
                resync(v1::ResyncReason::NotRetained),
                resync(v1::ResyncReason::Skipped),
            ],
        ),
    );

    // Hand-made prefixes the encoder never writes: an overlong (non-minimal)
    // varint, one that overflows u64, and one longer than ten bytes.
    let mut overlong = vec![selector(2, 0), 0, 0x83, 0x80, 0x00];
    overlong.extend_from_slice(&[0x0a, 0x01, b'a']);
    add("prefix-overlong", overlong);
    let mut overflow = vec![selector(2, 0), 0];
    overflow.extend_from_slice(&[0xff; 9]);
    overflow.push(0x02);
    add("prefix-overflow", overflow);
    let mut eleven = vec![selector(2, 0), 0];
    eleven.extend_from_slice(&[0x80; 11]);
    add("prefix-eleven-bytes", eleven);
    seeds
}

fn config_seeds() -> Vec<Seed> {
    let texts: &[(&str, &str)] = &[
        ("empty", ""),
        (
            "every-section",
            r#"server_name = "lapwing"
data_dir = "/var/lib/lapwing"
log_format = "json"

[listen]
quic = "127.0.0.1:7400"
grpc = "[::1]:7401"
http = "0.0.0.0:7402"

[tls]
cert = "/etc/lapwing/cert.pem"
key = "/etc/lapwing/key.pem"
grpc = "on"

[auth]
tokens = ["alpha-token", "beta-token"]
admin_token = "admin-secret"

[limits]
max_message_bytes = 1048576
max_connections = 10000
max_subscriptions_per_connection = 1024
max_topics = 100000
hello_timeout_ms = 10000
ring_memory_bytes = 1073741824
topics_created_per_connection = 1000
idle_topic_ttl_ms = 600000
handshake_timeout_ms = 10000
frame_timeout_ms = 10000
partial_frame_bytes = 67108864
max_publish_streams_per_connection = 100

[topic_defaults]
ring_bytes = 4194304
auto_create = false

[[topics]]
prefix = "metrics."
ring_bytes = 65536
max_message_bytes = 4096

[[topics]]
name = "orders.eu"
ring_bytes = 67108864

[transport]
udp_buffer_bytes = 4194304

[shutdown]
drain_ms = 1000
reconnect_after_ms = 500
"#,
        ),
        (
            "limits-at-edges",
            "[limits]\nmax_message_bytes = 67108864\nmax_connections = 1\nmax_subscriptions_per_connection = 1\nmax_topics = 1\nhello_timeout_ms = 1\n\n[topic_defaults]\nring_bytes = 268435456\n",
        ),
        (
            "invalid-everything",
            "server_name = \"\"\ndata_dir = \"\"\n[limits]\nmax_message_bytes = 0\nmax_connections = 0\nmax_topics = 0\nhello_timeout_ms = 0\n[tls]\ncert = \"c.pem\"\n[auth]\ntokens = [\"\"]\nadmin_token = \"\"\n[shutdown]\ndrain_ms = 60001\n[transport]\nudp_buffer_bytes = 1\n",
        ),
        (
            "topics-bad-entries",
            "[[topics]]\nname = \"a..b\"\n\n[[topics]]\nprefix = \"\"\n\n[[topics]]\nname = \"x\"\nprefix = \"y\"\n\n[[topics]]\nmax_message_bytes = 99999999999\nring_bytes = 4096\n",
        ),
        (
            "small-ring-big-message",
            "[limits]\nmax_message_bytes = 65536\n[topic_defaults]\nring_bytes = 4096\n",
        ),
        (
            "huge-numbers",
            "[limits]\nmax_message_bytes = 18446744073709551615\n[topic_defaults]\nring_bytes = 18446744073709551615\n[[topics]]\nprefix = \"p.\"\nring_bytes = 1099511627777\n",
        ),
        ("unknown-key", "[limits]\nmax_mesage_bytes = 10\n"),
        ("inline-tables", "listen = { quic = \"127.0.0.1:1\", grpc = \"127.0.0.1:2\", http = \"127.0.0.1:3\" }\ntopics = [{ name = \"t\" }, { prefix = \"q\" }]\n"),
    ];
    texts
        .iter()
        .map(|(name, text)| Seed {
            target: "config",
            name: (*name).to_owned(),
            bytes: text.as_bytes().to_vec(),
        })
        .collect()
}

fn topic_seeds() -> Vec<Seed> {
    let longest = format!("{}.{}", "a".repeat(127), "b".repeat(127));
    let too_long = "c".repeat(256);
    let names: &[(&str, &str)] = &[
        ("simple", "prices"),
        ("dotted", "prices.eur-usd"),
        ("all-classes", "Sensor_42.temp-C.x.1"),
        ("longest", &longest),
        ("too-long", &too_long),
        ("empty", ""),
        ("leading-dot", ".a"),
        ("trailing-dot", "a."),
        ("double-dot", "a..b"),
        ("wildcards", "a.*.>"),
        ("non-ascii", "caf\u{e9}.\u{1f426}"),
        ("control-chars", "a\t\0b"),
        ("patterns-star-rest", "prices.*\nprices.>\nprices.eur"),
        ("patterns-rest-covers", "a.>\na.*.c\na.b.c"),
        ("patterns-overlap", "*.b\na.*\na.b"),
        ("patterns-invalid", "a.>.b\npri*.x\nx"),
        ("patterns-literal", "orders.eu\n>\norders.eu"),
    ];
    names
        .iter()
        .map(|(name, text)| Seed {
            target: "topic",
            name: (*name).to_owned(),
            bytes: text.as_bytes().to_vec(),
        })
        .collect()
}

fn control_seeds() -> Vec<Seed> {
    use control_request::Kind as Req;
    use v1::start_position::{After, Kind as Start, Latest, Oldest};

    use crate::control::{LIMITED_TOKEN, SAME_EPOCH, TOKEN};

    let hello = |version, token: &str, name: &str| {
        request(Req::Hello(v1::Hello {
            version,
            token: token.into(),
            client_name: name.into(),
        }))
    };
    let ok_hello = hello(lapwing_proto::PROTOCOL_VERSION, TOKEN, "fuzz");
    let subscribe = |id, topic: &str, start, policy: v1::LagPolicy| {
        request(Req::Subscribe(v1::Subscribe {
            subscription_id: id,
            topic: topic.into(),
            start,
            lag_policy: policy as i32,
            ..Default::default()
        }))
    };
    let after = |epoch, seq| start(Start::After(After { epoch, seq }));
    let unsubscribe = |id| {
        request(Req::Unsubscribe(v1::Unsubscribe {
            subscription_id: id,
        }))
    };
    let ping = |nonce| request(Req::Ping(v1::Ping { nonce }));
    use v1::LagPolicy::{Disconnect, ResumeOldest, SkipToLatest};

    // Byte 0: messages published to `a` and `b` first; byte 1: messages
    // per live topic after each request (low nibble), delete `b` (0x10).
    let cases: Vec<(&str, u8, u8, Vec<v1::ControlRequest>)> = vec![
        (
            "subscribe-ping-unsubscribe",
            0,
            1,
            vec![
                ok_hello.clone(),
                subscribe(1, "a", start(Start::Latest(Latest {})), ResumeOldest),
                ping(7),
                unsubscribe(1),
            ],
        ),
        (
            "resume-after-lap",
            200,
            15,
            vec![
                ok_hello.clone(),
                subscribe(1, "a", start(Start::Oldest(Oldest {})), ResumeOldest),
                subscribe(2, "b", after(SAME_EPOCH, 5), ResumeOldest),
                subscribe(3, "a", after(SAME_EPOCH, u64::MAX), SkipToLatest),
                ping(1),
                ping(2),
            ],
        ),
        (
            "resume-other-epoch",
            50,
            3,
            vec![
                ok_hello.clone(),
                subscribe(1, "a", after(2, 10), ResumeOldest),
                subscribe(2, "fresh", after(2, 10), ResumeOldest),
            ],
        ),
        (
            "disconnect-when-lapped",
            100,
            15,
            vec![
                ok_hello.clone(),
                subscribe(1, "a", start(Start::Oldest(Oldest {})), Disconnect),
                ping(1),
                ping(2),
                ping(3),
                subscribe(1, "a", None, Disconnect),
            ],
        ),
        (
            "caps-quota-and-mistakes",
            0,
            0,
            vec![
                ok_hello.clone(),
                subscribe(1, "x", None, ResumeOldest),
                subscribe(1, "y", None, ResumeOldest),
                subscribe(2, "a..b", None, ResumeOldest),
                v1::ControlRequest {
                    kind: Some(Req::Subscribe(v1::Subscribe {
                        subscription_id: 3,
                        topic: "y".into(),
                        start: None,
                        lag_policy: 99,
                        ..Default::default()
                    })),
                },
                subscribe(4, "y", None, ResumeOldest),
                subscribe(5, "z", None, ResumeOldest),
                subscribe(6, "w", None, ResumeOldest),
                unsubscribe(4),
                subscribe(7, "w", None, ResumeOldest),
                unsubscribe(42),
                ok_hello.clone(),
                v1::ControlRequest { kind: None },
            ],
        ),
        (
            // Patterns over `a` and `b` (the limit is 2 topics), a resume
            // list, a refused `after`, then a third topic (`c`) that takes
            // the wildcards over their limit; `b` is deleted and re-created.
            "wildcards",
            40,
            0x13,
            vec![
                ok_hello.clone(),
                subscribe(1, "*", start(Start::Oldest(Oldest {})), ResumeOldest),
                v1::ControlRequest {
                    kind: Some(Req::Subscribe(v1::Subscribe {
                        subscription_id: 2,
                        topic: ">".into(),
                        start: start(Start::Latest(Latest {})),
                        lag_policy: ResumeOldest as i32,
                        resume: vec![
                            v1::TopicPosition {
                                topic: "a".into(),
                                epoch: 3,
                                next_seq: 0,
                            },
                            v1::TopicPosition {
                                topic: "b.c".into(),
                                epoch: 3,
                                next_seq: 2,
                            },
                        ],
                    })),
                },
                subscribe(3, "a.>", after(SAME_EPOCH, 1), ResumeOldest),
                ping(1),
                subscribe(3, "b", None, ResumeOldest),
                ping(2),
                unsubscribe(3),
                subscribe(3, "c", None, ResumeOldest),
                ping(3),
            ],
        ),
        (
            "topic-deleted",
            10,
            0x12,
            vec![
                ok_hello.clone(),
                subscribe(1, "b", start(Start::Oldest(Oldest {})), ResumeOldest),
                subscribe(2, "b", after(SAME_EPOCH, 3), ResumeOldest),
                ping(9),
            ],
        ),
        (
            "limited-principal",
            20,
            2,
            vec![
                hello(1, LIMITED_TOKEN, "limited"),
                subscribe(1, "a", start(Start::Oldest(Oldest {})), ResumeOldest),
                subscribe(2, "x.secret", None, ResumeOldest),
                subscribe(3, "x.secret.y", None, ResumeOldest),
                subscribe(4, "inbox.limited.1", None, ResumeOldest),
                subscribe(5, "inbox.other.1", None, ResumeOldest),
                subscribe(6, "x.*", None, ResumeOldest),
            ],
        ),
        ("wrong-token", 0, 0, vec![hello(1, "nope", "x"), ping(1)]),
        ("wrong-version", 0, 0, vec![hello(2, TOKEN, "x"), ping(1)]),
        (
            "long-client-name",
            0,
            0,
            vec![hello(1, TOKEN, &"n\u{e9}".repeat(200)), ping(1)],
        ),
        ("no-hello-first", 0, 0, vec![ping(1), ok_hello]),
    ];
    cases
        .into_iter()
        .map(|(name, pre, per_step, requests)| {
            let mut bytes = vec![pre, per_step];
            let mut wire = BytesMut::new();
            for r in &requests {
                encode_frame(r, &mut wire);
            }
            bytes.extend_from_slice(&wire);
            Seed {
                target: "control",
                name: name.to_owned(),
                bytes,
            }
        })
        .collect()
}
