//! A ring costs the memory it has held, not its capacity: its slots come
//! from zeroed allocation, which the OS backs with pages only once written.
//! (Its own test binary, so no other test's allocations move the RSS.)
#![cfg(all(not(loom), target_os = "linux"))]

use lapwing_ring::{Ring, RingConfig};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

#[test]
fn a_fresh_ring_is_not_resident_until_written() {
    const RINGS: usize = 16;
    const CAPACITY: usize = 16 << 20; // 16 MiB each, 256 MiB in all
    let before = rss_bytes();
    let mut rings = Vec::new();
    for _ in 0..RINGS {
        let (mut publisher, ring) =
            Ring::single_producer(RingConfig::new(CAPACITY, 4096)).expect("ring");
        // A few small and one arena-sized message: a handful of pages.
        for i in 0..8u8 {
            publisher.publish(&[i; 16]).expect("publish");
        }
        publisher.publish(&[7u8; 1000]).expect("publish");
        let mut reader = ring.reader(lapwing_ring::Start::Oldest);
        let mut buf = Vec::new();
        assert!(matches!(
            reader.try_read(&mut buf),
            lapwing_ring::ReadOutcome::Message { .. }
        ));
        assert_eq!(buf, [0u8; 16]);
        rings.push((publisher, ring));
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(
        grown < (RINGS * CAPACITY / 16) as u64,
        "{RINGS} rings of {CAPACITY} B holding a few messages each grew RSS by {grown} B"
    );
}
