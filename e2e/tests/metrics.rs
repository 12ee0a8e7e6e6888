//! `/metrics`, `/healthz` and `/readyz` on the HTTP listener, with QUIC
//! traffic: the per-transport counters move.

mod support;

use lapwing_client::SubscribeOptions;
use support::{connect, http_get as get, next_event, server};

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let (srv, _dir) = server(|_| {});
    let http = srv.http_addr();
    assert_eq!(get(http, "/healthz").await.0, 200);
    let (code, body) = get(http, "/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));

    let client = connect(&srv).await;
    let mut sub = client
        .subscribe("m.t", SubscribeOptions::default())
        .await
        .unwrap();
    for i in 0..5 {
        client.publish_acked("m.t", format!("p{i}")).await.unwrap();
    }
    for _ in 0..5 {
        next_event(&mut sub).await;
    }
    let (code, text) = get(http, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "lapwing_messages_published_total"), Some(5.0));
    assert_eq!(sample(&text, "lapwing_published_bytes_total"), Some(10.0));
    assert_eq!(sample(&text, "lapwing_topics"), Some(1.0));
    assert_eq!(
        sample(&text, "lapwing_connections{transport=\"quic\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "lapwing_subscriptions{transport=\"quic\"}"),
        Some(1.0)
    );
    // Delivered counts are recorded when each batch is read, before it is
    // written: the subscriber has all five, so they are counted.
    assert_eq!(
        sample(
            &text,
            "lapwing_messages_delivered_total{transport=\"quic\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "lapwing_messages_delivered_total{transport=\"grpc\"}"
        ),
        Some(0.0)
    );
    let latency_count = sample(
        &text,
        "lapwing_publish_to_deliver_seconds_count{transport=\"quic\"}",
    )
    .expect("latency histogram");
    assert!(latency_count >= 1.0, "{text}");
    assert!(text.contains("# TYPE lapwing_publish_to_deliver_seconds histogram"));
    srv.shutdown().await;
}
