//! The bench payload: every message says who sent it, its per-publisher
//! sequence number and when it was sent, so loss, reorder and latency are
//! measured the same way for every system (no server metadata needed).

use std::sync::OnceLock;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of header at the start of every payload.
pub const HEADER_BYTES: usize = 4 + 4 + 8 + 8;
const MAGIC: u32 = 0x4c41_5057; // "LAPW"

/// Decoded payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which publisher sent it.
    pub publisher: u32,
    /// Per-publisher sequence, from 0, contiguous.
    pub seq: u64,
    /// [`now_ns`] at send time.
    pub sent_ns: u64,
}

/// Nanoseconds on one monotonic clock shared by publishers and subscribers
/// of this process (they run in the same process, so no clock skew).
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Builds one payload of exactly `size` bytes (at least [`HEADER_BYTES`]).
pub fn encode(buf: &mut BytesMut, size: usize, header: Header) -> Bytes {
    let size = size.max(HEADER_BYTES);
    buf.reserve(size);
    buf.put_u32_le(MAGIC);
    buf.put_u32_le(header.publisher);
    buf.put_u64_le(header.seq);
    buf.put_u64_le(header.sent_ns);
    buf.put_bytes(0xa5, size - HEADER_BYTES);
    buf.split().freeze()
}

/// Reads the header; `None` for anything that is not a bench payload.
pub fn decode(payload: &[u8]) -> Option<Header> {
    if payload.len() < HEADER_BYTES {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(payload[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    if u32_at(0) != MAGIC {
        return None;
    }
    Some(Header {
        publisher: u32_at(4),
        seq: u64_at(8),
        sent_ns: u64_at(16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_size_and_header() {
        let mut buf = BytesMut::new();
        let h = Header {
            publisher: 7,
            seq: 123_456_789,
            sent_ns: 42,
        };
        for size in [0, HEADER_BYTES, 64, 1024] {
            let p = encode(&mut buf, size, h);
            assert_eq!(p.len(), size.max(HEADER_BYTES));
            assert_eq!(decode(&p), Some(h));
        }
        assert_eq!(decode(b"short"), None);
        assert_eq!(decode(&[0u8; 64]), None);
    }
}
