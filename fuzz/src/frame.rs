//! Target `frame`: [`FrameCodec`] reading arbitrary bytes as each message
//! type the QUIC streams carry.
//!
//! Input layout: byte 0 picks the message type (low nibble, modulo the six
//! types) and the frame limit (high nibble, from [`LIMITS`]); byte 1 is the
//! size of the pieces the rest is fed in (0: all at once), so the decoder
//! also sees frames split at every boundary a network could split them.
//!
//! Checked against an independent reading of the length prefix: a frame over
//! the limit is refused with a typed `TooLarge` naming its length, before
//! the decoder buffers or reserves room for it; an incomplete frame waits; a
//! complete one decodes to exactly what prost makes of its body. Every
//! decoded message re-encodes to a frame that decodes to the same message.

use bytes::BytesMut;
use lapwing_proto::frame::{encode_frame, frame_len};
use lapwing_proto::{v1, ErrorCode, FrameCodec, FrameError};
use tokio_util::codec::{Decoder, Encoder};

/// Frame limits the target picks from: small, so the fuzzer reaches the
/// limit with short inputs (0 is a real limit: only empty messages fit).
pub const LIMITS: [usize; 4] = [1024, 300, 16, 0];

/// The message types, in the order byte 0 selects them.
pub const TYPES: [&str; 6] = [
    "ControlRequest",
    "ControlResponse",
    "Publish",
    "PublishResult",
    "SubscriptionStreamHeader",
    "Delivery",
];

/// Longest LEB128 encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

/// The input header byte 0 for message type `type_index` (into [`TYPES`])
/// under limit `limit_index` (into [`LIMITS`]).
pub fn selector(type_index: usize, limit_index: usize) -> u8 {
    let byte = type_index % TYPES.len() + (limit_index % LIMITS.len()) * 16;
    u8::try_from(byte).expect("both indices are small")
}

/// Runs one input (see the module documentation for its layout).
pub fn run(data: &[u8]) {
    let [selector, piece, wire @ ..] = data else {
        return;
    };
    let max = LIMITS[usize::from(selector >> 4) % LIMITS.len()];
    let piece = match usize::from(*piece) {
        0 => wire.len().max(1),
        n => n,
    };
    match usize::from(selector & 0x0f) % TYPES.len() {
        0 => check::<v1::ControlRequest>(wire, max, piece),
        1 => check::<v1::ControlResponse>(wire, max, piece),
        2 => check::<v1::Publish>(wire, max, piece),
        3 => check::<v1::PublishResult>(wire, max, piece),
        4 => check::<v1::SubscriptionStreamHeader>(wire, max, piece),
        _ => check::<v1::Delivery>(wire, max, piece),
    }
}

/// What the decoder must do with the bytes at the head of its buffer.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Wait for more bytes.
    NeedMore,
    /// Refuse: the prefix announces (at least) this many bytes.
    TooLarge(u64),
    /// Refuse: the prefix is not a u64 varint.
    BadPrefix,
    /// Decode the body `buf[prefix_len..prefix_len + len]`.
    Frame { prefix_len: usize, len: usize },
}

/// Reads the length prefix independently of the codec (in u128, so an
/// overflowing prefix is seen rather than wrapped).
fn expect(buf: &[u8], max: usize) -> Expect {
    let mut value: u128 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u128::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let Ok(len) = u64::try_from(value) else {
                return Expect::BadPrefix;
            };
            if len > max as u64 {
                return Expect::TooLarge(len);
            }
            let (prefix_len, len) = (i + 1, len as usize);
            return if buf.len() < prefix_len + len {
                Expect::NeedMore
            } else {
                Expect::Frame { prefix_len, len }
            };
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Expect::BadPrefix;
    }
    // An incomplete prefix is at least what its bytes so far say (< 2^63).
    let lower_bound = value as u64;
    if lower_bound > max as u64 {
        Expect::TooLarge(lower_bound)
    } else {
        Expect::NeedMore
    }
}

fn check<M>(wire: &[u8], max: usize, piece: usize)
where
    M: prost::Message + Default + PartialEq + Clone + std::fmt::Debug,
{
    let mut codec = FrameCodec::<M>::new(max);
    let mut buf = BytesMut::new();
    // What the decoder may hold at most: all it was given, plus room for
    // one frame the limit allows, with the allocator's doubling on top.
    let allowed_capacity = 2 * (wire.len() + MAX_VARINT_LEN + max) + 64;
    for chunk in wire.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            let expected = expect(&buf, max);
            let body = match expected {
                Expect::Frame { prefix_len, len } => {
                    Some(buf[prefix_len..prefix_len + len].to_vec())
                }
                _ => None,
            };
            let len_before = buf.len();
            let result = codec.decode(&mut buf);
            assert!(
                buf.capacity() <= allowed_capacity,
                "decoder grew its buffer to {} bytes (limit {max}, input {} bytes): {expected:?}",
                buf.capacity(),
                wire.len(),
            );
            match (expected, result) {
                (Expect::NeedMore, Ok(None)) => {
                    assert_eq!(buf.len(), len_before, "a waiting decoder consumed bytes");
                    break;
                }
                (Expect::TooLarge(len), Err(err @ FrameError::TooLarge { len: got, max: m })) => {
                    assert_eq!((got, m), (len, max), "TooLarge names the wrong sizes");
                    assert_eq!(err.code(), ErrorCode::FrameTooLarge);
                    return;
                }
                (Expect::BadPrefix, Err(err @ FrameError::Malformed { .. })) => {
                    assert_eq!(err.code(), ErrorCode::Protocol);
                    return;
                }
                (Expect::Frame { prefix_len, len }, result) => {
                    let body = body.expect("a frame has a body");
                    match (M::decode(&body[..]), result) {
                        (Ok(want), Ok(Some(got))) => {
                            assert!(got == want, "decoded message differs from its body's");
                            assert_eq!(buf.len(), len_before - prefix_len - len);
                            round_trip(&got, max);
                        }
                        (Err(_), Err(err @ FrameError::Malformed { .. })) => {
                            assert_eq!(err.code(), ErrorCode::Protocol);
                            return;
                        }
                        (want, got) => panic!(
                            "frame of {len} bytes: prost says {:?}, the codec {got:?}",
                            want.map(|_| "a message")
                        ),
                    }
                }
                (expected, got) => panic!("expected {expected:?}, the codec returned {got:?}"),
            }
        }
    }
    // The stream ends: leftover bytes are a truncated frame.
    let leftover = buf.len();
    match codec.decode_eof(&mut buf) {
        Ok(None) => assert_eq!(leftover, 0, "decode_eof ignored {leftover} bytes"),
        Err(FrameError::Truncated { buffered }) => {
            assert!(leftover > 0, "Truncated with nothing buffered");
            assert_eq!(buffered, leftover);
        }
        other => panic!("decode_eof on an incomplete frame returned {other:?}"),
    }
}

/// A decoded message, encoded again, decodes to itself; the codec's
/// encoder writes the same bytes as `encode_frame` or refuses with
/// `TooLarge` when the body is over the limit.
fn round_trip<M>(msg: &M, max: usize)
where
    M: prost::Message + Default + PartialEq + Clone + std::fmt::Debug,
{
    let mut wire = BytesMut::new();
    encode_frame(msg, &mut wire);
    assert_eq!(wire.len(), frame_len(msg));

    let body_len = msg.encoded_len();
    let mut codec = FrameCodec::<M>::new(body_len);
    let mut copy = wire.clone();
    match codec.decode(&mut copy) {
        Ok(Some(again)) => assert!(again == *msg, "re-encoded message decodes differently"),
        other => panic!("re-encoded frame of {body_len} bytes does not decode: {other:?}"),
    }
    assert!(copy.is_empty(), "re-encoded frame left bytes behind");

    let mut encoded = BytesMut::new();
    match FrameCodec::<M>::new(max).encode(msg.clone(), &mut encoded) {
        Ok(()) => {
            assert!(body_len <= max, "encoder wrote a body over the limit");
            assert_eq!(encoded, wire, "encoder and encode_frame disagree");
        }
        Err(FrameError::TooLarge { len, max: m }) => {
            assert!(body_len > max, "encoder refused a body within the limit");
            assert_eq!((len, m), (body_len as u64, max));
            assert!(encoded.is_empty(), "a refused frame was partly written");
        }
        Err(other) => panic!("encoder failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_model_agrees_with_the_documented_cases() {
        assert_eq!(expect(&[], 10), Expect::NeedMore);
        assert_eq!(
            expect(&[0x00], 0),
            Expect::Frame {
                prefix_len: 1,
                len: 0
            }
        );
        assert_eq!(expect(&[0x02, 0x08], 10), Expect::NeedMore);
        assert_eq!(expect(&[0x0b], 10), Expect::TooLarge(11));
        assert_eq!(expect(&[0xff, 0xff], 1000), Expect::TooLarge(0x3fff));
        assert_eq!(expect(&[0x80; 11], usize::MAX), Expect::BadPrefix);
        let overflow = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(expect(&overflow, usize::MAX), Expect::BadPrefix);
    }

    #[test]
    fn selector_round_trips_through_run() {
        for t in 0..TYPES.len() {
            for l in 0..LIMITS.len() {
                let s = selector(t, l);
                assert_eq!(usize::from(s & 0x0f) % TYPES.len(), t);
                assert_eq!(usize::from(s >> 4) % LIMITS.len(), l);
            }
        }
    }
}
