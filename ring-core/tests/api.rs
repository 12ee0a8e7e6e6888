//! Behaviour a user of the ring notices, one scenario per test.

use lapwing_ring::{
    Batch, BatchEvent, ConfigError, Geometry, Lagged, PublishError, ReadOutcome, Resume, Ring,
    RingConfig, Start,
};

fn small_sp() -> (lapwing_ring::Publisher, std::sync::Arc<Ring>) {
    // 8 headers, 8 arena chunks: easy to lap by hand.
    Ring::single_producer_with_geometry(
        Geometry {
            header_slots: 8,
            arena_slots: 8,
        },
        8 * 56,
        7,
    )
    .unwrap()
}

fn read(r: &mut lapwing_ring::Reader) -> (ReadOutcome, Vec<u8>) {
    let mut buf = Vec::new();
    let out = r.try_read(&mut buf);
    (out, buf)
}

#[test]
fn delivers_in_order_with_contiguous_seqs_inline_and_arena() {
    let (mut p, ring) = small_sp();
    let mut r = ring.reader(Start::Oldest);
    assert_eq!(read(&mut r).0, ReadOutcome::Empty);
    let payloads: Vec<Vec<u8>> = vec![
        vec![],
        b"x".to_vec(),
        vec![7; 48],
        vec![9; 49],
        vec![1; 200],
    ];
    for (i, pl) in payloads.iter().enumerate() {
        assert_eq!(p.publish(pl).unwrap(), i as u64);
    }
    for (i, pl) in payloads.iter().enumerate() {
        assert!(r.has_new());
        let (out, buf) = read(&mut r);
        assert_eq!(out, ReadOutcome::Message { seq: i as u64 });
        assert_eq!(&buf, pl);
    }
    assert!(!r.has_new());
    assert_eq!(r.stats().received, 5);
}

#[test]
fn publish_parts_is_the_concatenation() {
    let (mut p, ring) = small_sp();
    let mut r = ring.reader(Start::Latest);
    p.publish_parts(&[b"12345678", b"", &[5u8; 100]]).unwrap();
    let (out, buf) = read(&mut r);
    assert_eq!(out, ReadOutcome::Message { seq: 0 });
    assert_eq!(&buf[..8], b"12345678");
    assert_eq!(&buf[8..], &[5u8; 100][..]);
}

#[test]
fn too_large_is_an_error_and_uses_no_seq() {
    let (mut p, ring) = small_sp();
    let big = vec![0; 8 * 56 + 1];
    assert_eq!(
        p.publish(&big),
        Err(PublishError::TooLarge { len: 449, max: 448 })
    );
    assert_eq!(ring.head(), 0);
    assert_eq!(p.publish(&big[..448]).unwrap(), 0);
}

#[test]
fn lapped_reader_gets_exact_gap_then_continues_from_oldest() {
    let (mut p, ring) = small_sp();
    let mut r = ring.reader(Start::Oldest);
    for i in 0..20u8 {
        p.publish(&[i]).unwrap();
    }
    // 8 headers hold seqs 12..20.
    assert_eq!(ring.oldest_retained(), 12);
    let (out, _) = read(&mut r);
    assert_eq!(
        out,
        ReadOutcome::Lagged(Lagged {
            missed: 12,
            resume_seq: 12
        })
    );
    let (out, buf) = read(&mut r);
    assert_eq!(out, ReadOutcome::Message { seq: 12 });
    assert_eq!(buf, vec![12]);
    let s = r.stats();
    assert_eq!((s.received, s.lagged_events, s.missed), (1, 1, 12));
}

#[test]
fn arena_laps_before_headers_for_big_messages() {
    let (mut p, ring) = small_sp();
    let mut r = ring.reader(Start::Oldest);
    // Each 112-byte message takes 2 of the 8 chunks: only 4 fit.
    for i in 0..6u8 {
        p.publish(&[i; 112]).unwrap();
    }
    assert_eq!(ring.oldest_retained(), 2);
    assert_eq!(
        read(&mut r).0,
        ReadOutcome::Lagged(Lagged {
            missed: 2,
            resume_seq: 2
        })
    );
    assert_eq!(
        read(&mut r),
        (ReadOutcome::Message { seq: 2 }, vec![2; 112])
    );
}

#[test]
fn start_at_a_gone_seq_reports_the_gap() {
    let (mut p, ring) = small_sp();
    for i in 0..20u8 {
        p.publish(&[i]).unwrap();
    }
    let mut r = ring.reader(Start::At(5));
    assert_eq!(
        read(&mut r).0,
        ReadOutcome::Lagged(Lagged {
            missed: 7,
            resume_seq: 12
        })
    );
    let mut r = ring.reader(Start::At(15));
    assert_eq!(read(&mut r), (ReadOutcome::Message { seq: 15 }, vec![15]));
    let mut future = ring.reader(Start::At(22));
    assert_eq!(read(&mut future).0, ReadOutcome::Empty);
    p.publish(b"20").unwrap();
    p.publish(b"21").unwrap();
    assert!(!future.has_new());
    p.publish(b"22").unwrap();
    assert_eq!(
        read(&mut future),
        (ReadOutcome::Message { seq: 22 }, b"22".to_vec())
    );
    let mut far = ring.reader(Start::At(u64::MAX));
    assert_eq!(read(&mut far).0, ReadOutcome::Empty);
}

#[test]
fn latest_sees_only_new_messages() {
    let (mut p, ring) = small_sp();
    p.publish(b"old").unwrap();
    let mut r = ring.reader(Start::Latest);
    assert_eq!(r.next_seq(), 1);
    assert_eq!(read(&mut r).0, ReadOutcome::Empty);
    p.publish(b"new").unwrap();
    assert_eq!(
        read(&mut r),
        (ReadOutcome::Message { seq: 1 }, b"new".to_vec())
    );
}

#[test]
fn resume_newest_jumps_to_the_last_message() {
    let (mut p, ring) = small_sp();
    let mut r = ring.reader(Start::Oldest);
    r.set_resume(Resume::Newest);
    for i in 0..20u8 {
        p.publish(&[i]).unwrap();
    }
    assert_eq!(
        read(&mut r).0,
        ReadOutcome::Lagged(Lagged {
            missed: 19,
            resume_seq: 19
        })
    );
    assert_eq!(read(&mut r), (ReadOutcome::Message { seq: 19 }, vec![19]));
}

#[test]
fn batch_drains_in_order_within_limits() {
    let (mut p, ring) = small_sp();
    let mut r = ring.reader(Start::Oldest);
    for i in 0..10u8 {
        p.publish(&[i; 10]).unwrap();
    }
    let mut batch = Batch::with_capacity(16, 1024);
    // Lag (2 missed), then messages 2.. limited to 3 events.
    assert_eq!(r.read_batch(&mut batch, 3, usize::MAX), 3);
    let events: Vec<_> = batch.iter().collect();
    assert_eq!(
        events,
        vec![
            BatchEvent::Lagged(Lagged {
                missed: 2,
                resume_seq: 2
            }),
            BatchEvent::Message {
                seq: 2,
                payload: &[2; 10]
            },
            BatchEvent::Message {
                seq: 3,
                payload: &[3; 10]
            },
        ]
    );
    batch.clear();
    // 25 bytes: two 10-byte messages fit, the third would not.
    assert_eq!(r.read_batch(&mut batch, 100, 25), 2);
    // max_bytes 0 still takes one message.
    batch.clear();
    assert_eq!(r.read_batch(&mut batch, 100, 0), 1);
    batch.clear();
    assert_eq!(r.read_batch(&mut batch, 100, usize::MAX), 3);
    assert_eq!(r.read_batch(&mut batch, 100, usize::MAX), 0);
    assert_eq!(batch.len(), 3);
    assert_eq!(r.next_seq(), 10);
}

#[test]
fn multi_producer_shares_the_read_protocol() {
    let (p, ring) = Ring::multi_producer(RingConfig::new(4096, 1024)).unwrap();
    let mut r = ring.reader(Start::Oldest);
    let p2 = p.clone();
    assert_eq!(p.publish(b"a").unwrap(), 0);
    assert_eq!(p2.publish(&[3; 1000]).unwrap(), 1);
    assert_eq!(
        read(&mut r),
        (ReadOutcome::Message { seq: 0 }, b"a".to_vec())
    );
    assert_eq!(
        read(&mut r),
        (ReadOutcome::Message { seq: 1 }, vec![3; 1000])
    );
    assert_eq!(
        p.publish(&[0; 1025]),
        Err(PublishError::TooLarge {
            len: 1025,
            max: 1024
        })
    );
}

#[test]
fn config_errors_are_typed() {
    assert!(matches!(
        Ring::single_producer(RingConfig::new(0, 0)),
        Err(ConfigError::CapacityTooSmall { .. })
    ));
    assert!(matches!(
        Ring::multi_producer(RingConfig::new(4096, 4096)),
        Err(ConfigError::MessageDoesNotFit { .. })
    ));
    let (_, ring) = Ring::single_producer(RingConfig::new(4096, 1024)).unwrap();
    assert_eq!(ring.memory_bytes(), 4096);
    assert_eq!(ring.max_message_bytes(), 1024);
    let (_, other) = Ring::single_producer(RingConfig::new(4096, 1024)).unwrap();
    assert_ne!(ring.epoch(), other.epoch());
    assert_ne!(ring.epoch(), 0);
}

#[test]
fn handles_are_thread_safe_as_promised() {
    fn send<T: Send>() {}
    fn send_sync_clone<T: Send + Sync + Clone>() {}
    send::<lapwing_ring::Publisher>();
    send::<lapwing_ring::Reader>();
    send::<Batch>();
    send_sync_clone::<lapwing_ring::MpPublisher>();
    send_sync_clone::<std::sync::Arc<Ring>>();
}

#[test]
fn absurd_test_geometries_are_errors_not_panics() {
    for (h, c) in [(0, 0), (3, 0), (4, 3), (usize::MAX, 0), (4, 1 << 60)] {
        let g = Geometry {
            header_slots: h,
            arena_slots: c,
        };
        let _ = g.memory_bytes();
        assert!(matches!(
            Ring::single_producer_with_geometry(g, 0, 1),
            Err(ConfigError::BadGeometry { .. })
        ));
    }
}

fn roomy_sp() -> (lapwing_ring::Publisher, std::sync::Arc<Ring>) {
    // 8 headers, 64 arena chunks (3.5 KiB): two 1500-byte messages fit, a
    // third overwrites the first.
    Ring::single_producer_with_geometry(
        Geometry {
            header_slots: 8,
            arena_slots: 64,
        },
        2048,
        7,
    )
    .unwrap()
}

#[test]
fn a_peeked_message_is_copied_after_what_the_caller_wrote_minus_its_skipped_head() {
    let (mut p, ring) = roomy_sp();
    let mut r = ring.reader(Start::Oldest);
    // Lengths on either side of the inline limit (56) and of the header's
    // prefix (48), and one that spans many chunks.
    for len in [0usize, 3, 8, 13, 48, 49, 56, 57, 104, 105, 1024] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let seq = p.publish(&payload).unwrap();
        let lapwing_ring::Peek::Message(m) = r.peek() else {
            panic!("len {len}: a message");
        };
        assert_eq!((m.seq(), m.len()), (seq, len));
        let mut first = [0u8; 8];
        let n = len.min(8);
        first[..n].copy_from_slice(&payload[..n]);
        assert_eq!(m.first_word(), u64::from_le_bytes(first), "len {len}");
        let mut out = b"head".to_vec();
        m.copy_into(8, &mut out).unwrap();
        assert_eq!(&out[..4], b"head", "len {len}");
        assert_eq!(&out[4..], &payload[len.min(8)..], "len {len}");
    }
    assert!(matches!(r.peek(), lapwing_ring::Peek::Empty));
    assert_eq!(r.stats().received, 11);
}

#[test]
fn any_skip_copies_exactly_the_rest_of_the_message() {
    // Inside a word, at a word, past the header's prefix (40 bytes), past
    // the end.
    for len in [5usize, 56, 57, 300, 1024] {
        let (mut p, ring) = roomy_sp();
        let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
        let mut r = ring.reader(Start::Oldest);
        for skip in [0usize, 3, 8, 13, 40, 45, 60, 2000] {
            p.publish(&payload).unwrap();
            let lapwing_ring::Peek::Message(m) = r.peek() else {
                panic!("len {len}: a message");
            };
            let mut out = vec![0xEE; 3];
            m.copy_into(skip, &mut out).unwrap();
            assert_eq!(&out[..3], &[0xEE; 3]);
            assert_eq!(
                &out[3..],
                &payload[skip.min(len)..],
                "len {len} skip {skip}"
            );
        }
    }
}

#[test]
fn a_pending_message_not_copied_stays_at_the_cursor() {
    let (mut p, ring) = roomy_sp();
    let mut r = ring.reader(Start::Oldest);
    p.publish(&[5u8; 300]).unwrap();
    match r.peek() {
        lapwing_ring::Peek::Message(m) => assert_eq!(m.seq(), 0),
        other => panic!("{other:?}"),
    }
    let (out, buf) = read(&mut r);
    assert_eq!(out, ReadOutcome::Message { seq: 0 });
    assert_eq!(buf, vec![5u8; 300]);
}

#[test]
fn a_copy_torn_by_the_writer_rolls_the_callers_buffer_back_and_reports_the_lap() {
    let (mut p, ring) = roomy_sp();
    let mut r = ring.reader(Start::Oldest);
    p.publish(&[1u8; 1500]).unwrap();
    let lapwing_ring::Peek::Message(m) = r.peek() else {
        panic!("a message");
    };
    // Between the header read and the copy, the writer reuses the arena.
    for _ in 0..2 {
        p.publish(&[2u8; 1500]).unwrap();
    }
    let mut out = b"frame head".to_vec();
    let lag = m.copy_into(8, &mut out).unwrap_err();
    assert_eq!(out, b"frame head", "nothing of the torn copy is left");
    assert_eq!(
        lag,
        Lagged {
            missed: 1,
            resume_seq: 1
        }
    );
    assert_eq!(r.next_seq(), 1);
    let (outcome, buf) = read(&mut r);
    assert_eq!(outcome, ReadOutcome::Message { seq: 1 });
    assert_eq!(buf, vec![2u8; 1500]);
}

#[cfg(feature = "bytes")]
#[test]
fn a_payload_goes_straight_into_a_bytes_mut_and_a_torn_one_is_taken_back() {
    let (mut p, ring) = roomy_sp();
    let mut r = ring.reader(Start::Oldest);
    let payload: Vec<u8> = (0..1024).map(|i| i as u8).collect();
    p.publish(&payload).unwrap();
    let mut out = bytes::BytesMut::from(&b"head"[..]);
    let lapwing_ring::Peek::Message(m) = r.peek() else {
        panic!("a message");
    };
    m.copy_into(0, &mut out).unwrap();
    assert_eq!(&out[4..], &payload[..]);
    p.publish(&payload).unwrap();
    let lapwing_ring::Peek::Message(m) = r.peek() else {
        panic!("a message");
    };
    for _ in 0..2 {
        p.publish(&[0u8; 1500]).unwrap();
    }
    let before = out.len();
    assert!(m.copy_into(0, &mut out).is_err());
    assert_eq!(out.len(), before);
}
