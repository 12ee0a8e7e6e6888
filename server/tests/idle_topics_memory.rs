//! 10 000 idle topics must fit in modest memory while every topic can
//! still take a maximum-size (1 MiB) message: rings are allocated on the
//! first publish, so a topic that is only subscribed to costs its
//! bookkeeping, not its 4 MiB ring.
//!
//! Measured as the growth of this process's resident set (Linux
//! `/proc/self/statm`) across creating the topics and one idle subscription
//! on each. Run with `--nocapture` to see the figures.

#![forbid(unsafe_code)]

use lapwing_proto::v1::LagPolicy;
use lapwing_server::drain::{Drain, StartAt};
use lapwing_server::registry::Registry;
use lapwing_server::Config;

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident_pages * 4096)
}

#[test]
fn ten_thousand_idle_topics_fit_in_a_few_mib() {
    const TOPICS: usize = 10_000;
    let config = Config::default(); // 4 MiB rings, 1 MiB max message
    let registry = Registry::from_config(&config).unwrap();
    let Some(before) = rss_bytes() else {
        eprintln!("no /proc/self/statm: skipping the measurement");
        return;
    };
    let drains: Vec<Drain> = (0..TOPICS)
        .map(|i| {
            let topic = registry.get_or_create(&format!("idle.topic{i}")).unwrap();
            Drain::new(topic, StartAt::Latest, LagPolicy::ResumeOldest)
        })
        .collect();
    let after = rss_bytes().unwrap();
    let grown = after.saturating_sub(before);
    eprintln!(
        "{TOPICS} idle topics with one subscription each: RSS +{:.1} MiB ({} bytes/topic); \
         eager 4 MiB rings would need {} MiB",
        grown as f64 / (1 << 20) as f64,
        grown / TOPICS as u64,
        (TOPICS * config.topic_defaults.ring_bytes) >> 20,
    );
    assert_eq!(registry.len(), TOPICS);
    assert!(grown < 32 << 20, "idle topics cost {grown} bytes");

    // Each of them still takes a maximum-size message once used.
    let topic = registry.get("idle.topic0").unwrap();
    topic
        .publish(&vec![0u8; config.limits.max_message_bytes])
        .unwrap();
    let with_one_ring = rss_bytes().unwrap();
    eprintln!(
        "after one 1 MiB publish: RSS +{:.1} MiB (one ring allocated: {} MiB)",
        with_one_ring.saturating_sub(after) as f64 / (1 << 20) as f64,
        topic.stats().ring_memory_bytes >> 20,
    );
    drop(drains);
}
