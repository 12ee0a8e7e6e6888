//! Stream framing: an unsigned LEB128 varint length, then that many bytes of
//! one protobuf message.
//!
//! The decoder reads the length prefix without consuming it and rejects a
//! length over the limit *before* it buffers or reserves anything for the
//! frame, so a peer cannot make us allocate by announcing a huge frame. A half
//! frame holds what has arrived, plus at most [`RESERVE_AHEAD_BYTES`] (and
//! the buffer's geometric growth), whatever length it announced.

use std::marker::PhantomData;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::v1::ErrorCode;

/// How far ahead of the bytes received the decoder reserves buffer space
/// for a frame in progress: 16 KiB.
pub const RESERVE_AHEAD_BYTES: usize = 16 * 1024;

/// Longest LEB128 encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit. Nothing was buffered
    /// for it; the stream cannot be resynchronised and should be stopped.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit it broke.
        max: usize,
    },
    /// The length prefix is not a valid varint, or the body is not a valid
    /// protobuf message of the expected type.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What the decoder found wrong.
        reason: String,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the unfinished frame that had arrived.
        buffered: usize,
    },
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// The wire error code that reports this failure to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Malformed { .. } | FrameError::Truncated { .. } => ErrorCode::Protocol,
            FrameError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// A [`Decoder`] and [`Encoder`] of frames holding messages of type `M`.
///
/// Payload `bytes` fields decode as `Bytes` slices of the read buffer (no copy).
pub struct FrameCodec<M> {
    max_frame_bytes: usize,
    _message: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for FrameCodec<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCodec")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("message", &std::any::type_name::<M>())
            .finish()
    }
}

impl<M> Clone for FrameCodec<M> {
    fn clone(&self) -> Self {
        Self::new(self.max_frame_bytes)
    }
}

impl<M> FrameCodec<M> {
    /// A codec that accepts (and writes) frame bodies of at most
    /// `max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self {
            max_frame_bytes,
            _message: PhantomData,
        }
    }

    /// Changes the limit, e.g. from [`crate::PRE_HELLO_MAX_FRAME_BYTES`] to
    /// the negotiated one once `Welcome` is exchanged.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// The current limit on a frame body.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
}

/// Outcome of reading a varint prefix without consuming it.
#[derive(Debug, PartialEq, Eq)]
enum Prefix {
    /// More bytes are needed; the value so far is at least `lower_bound`.
    Incomplete { lower_bound: u64 },
    /// The prefix is `prefix_len` bytes long and announces `len` bytes.
    Complete { len: u64, prefix_len: usize },
}

fn peek_varint(buf: &[u8]) -> Result<Prefix, FrameError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(FrameError::Malformed {
                reason: "length prefix overflows u64".into(),
            });
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Prefix::Complete {
                len: value,
                prefix_len: i + 1,
            });
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(FrameError::Malformed {
            reason: "length prefix longer than 10 bytes".into(),
        });
    }
    Ok(Prefix::Incomplete { lower_bound: value })
}

impl<M: prost::Message + Default> Decoder for FrameCodec<M> {
    type Item = M;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<M>, FrameError> {
        let max = self.max_frame_bytes;
        let (len, prefix_len) = match peek_varint(src)? {
            Prefix::Incomplete { lower_bound } => {
                // Even a partial prefix can already prove the frame too big.
                if lower_bound > max as u64 {
                    return Err(FrameError::TooLarge {
                        len: lower_bound,
                        max,
                    });
                }
                return Ok(None);
            }
            Prefix::Complete { len, prefix_len } => (len, prefix_len),
        };
        if len > max as u64 {
            return Err(FrameError::TooLarge { len, max });
        }
        // `len <= max`, so it fits in usize and bounds what we reserve.
        let len = len as usize;
        let needed = prefix_len + len;
        if src.len() < needed {
            // Grow with what arrives, not with what is announced: a peer
            // that announces a large frame and stalls makes us hold what it
            // sent, not the frame's full length (the buffer still grows
            // geometrically, so a large frame costs few reallocations).
            src.reserve((needed - src.len()).min(RESERVE_AHEAD_BYTES));
            return Ok(None);
        }
        src.advance(prefix_len);
        let body = src.split_to(len).freeze();
        M::decode(body)
            .map(Some)
            .map_err(|e| FrameError::Malformed {
                reason: e.to_string(),
            })
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<M>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl<M: prost::Message> Encoder<M> for FrameCodec<M> {
    type Error = FrameError;

    /// Appends one frame; refuses a body over the limit (the peer would
    /// reject it anyway, and stop the whole stream).
    fn encode(&mut self, item: M, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = item.encoded_len();
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max_frame_bytes,
            });
        }
        encode_frame(&item, dst);
        Ok(())
    }
}

/// Appends one frame holding `msg` to `dst`, growing it as needed. Build many
/// frames into one buffer and hand the transport one write.
pub fn encode_frame<M: prost::Message>(msg: &M, dst: &mut BytesMut) {
    let len = msg.encoded_len();
    dst.reserve(prost::encoding::encoded_len_varint(len as u64) + len);
    prost::encoding::encode_varint(len as u64, dst);
    // Cannot fail: `reserve` made room and BytesMut grows anyway.
    msg.encode(dst)
        .expect("BytesMut has room for the encoded message");
}

/// The encoded size of `msg` as a frame (prefix + body).
pub fn frame_len<M: prost::Message>(msg: &M) -> usize {
    let len = msg.encoded_len();
    prost::encoding::encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{self, control_request, delivery};
    use bytes::{BufMut, Bytes};

    fn sample_deliveries() -> Vec<v1::Delivery> {
        vec![
            v1::Delivery {
                kind: Some(delivery::Kind::Message(v1::Message {
                    seq: 0,
                    payload: Bytes::new(),
                    publish_time_unix_nanos: 1,
                    epoch: 42,
                    ..Default::default()
                })),
            },
            v1::Delivery {
                kind: Some(delivery::Kind::Message(v1::Message {
                    seq: 300,
                    payload: Bytes::from(vec![0xAB; 1000]),
                    publish_time_unix_nanos: 1_700_000_000_000_000_000,
                    epoch: u64::MAX,
                    ..Default::default()
                })),
            },
            v1::Delivery {
                kind: Some(delivery::Kind::Resync(v1::Resync {
                    missed: 17,
                    resume_seq: 318,
                    reason: v1::ResyncReason::Lapped as i32,
                    epoch: 42,
                    ..Default::default()
                })),
            },
        ]
    }

    fn encode_all(frames: &[v1::Delivery]) -> BytesMut {
        let mut buf = BytesMut::new();
        for f in frames {
            encode_frame(f, &mut buf);
        }
        buf
    }

    #[test]
    fn round_trip_many_frames_in_one_buffer() {
        let frames = sample_deliveries();
        let mut buf = encode_all(&frames);
        let mut codec = FrameCodec::<v1::Delivery>::new(4096);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert_eq!(out, frames);
        assert!(buf.is_empty());
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn encoder_matches_encode_frame_and_frame_len() {
        let hello = v1::ControlRequest {
            kind: Some(control_request::Kind::Hello(v1::Hello {
                version: crate::PROTOCOL_VERSION,
                token: "t".into(),
                client_name: "test".into(),
            })),
        };
        let mut a = BytesMut::new();
        FrameCodec::new(1024).encode(hello.clone(), &mut a).unwrap();
        let mut b = BytesMut::new();
        encode_frame(&hello, &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), frame_len(&hello));
    }

    #[test]
    fn encoder_refuses_oversize_body() {
        let p = v1::Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![0; 100]),
        };
        let mut buf = BytesMut::new();
        let err = FrameCodec::new(50).encode(p, &mut buf).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { max: 50, .. }), "{err}");
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_split_at_every_byte_boundary_decode_once_complete() {
        let frames = sample_deliveries();
        let wire = encode_all(&frames).freeze();
        for split in 0..=wire.len() {
            let mut codec = FrameCodec::<v1::Delivery>::new(4096);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    out.push(f);
                }
            }
            assert_eq!(out, frames, "split at {split}");
        }
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_decode_exactly_when_complete() {
        let frames = sample_deliveries();
        let mut ends = Vec::new();
        let mut total = 0;
        for f in &frames {
            total += frame_len(f);
            ends.push(total);
        }
        let wire = encode_all(&frames).freeze();
        let mut codec = FrameCodec::<v1::Delivery>::new(4096);
        let mut buf = BytesMut::new();
        let mut decoded_at = Vec::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            if let Some(f) = codec.decode(&mut buf).unwrap() {
                assert_eq!(f, frames[decoded_at.len()]);
                decoded_at.push(i + 1);
            }
        }
        assert_eq!(decoded_at, ends);
    }

    #[test]
    fn oversize_prefix_is_rejected_without_allocating() {
        // 4 GiB announced by a 5-byte varint, and nothing else.
        let mut buf = BytesMut::with_capacity(5);
        prost::encoding::encode_varint(1u64 << 32, &mut buf);
        assert_eq!(buf.len(), 5);
        let cap = buf.capacity();
        let mut codec = FrameCodec::<v1::Publish>::new(1 << 20);
        let err = codec.decode(&mut buf).unwrap_err();
        match err {
            FrameError::TooLarge { len, max } => {
                assert_eq!(len, 1 << 32);
                assert_eq!(max, 1 << 20);
            }
            other => panic!("expected TooLarge, got {other}"),
        }
        assert_eq!(buf.capacity(), cap, "decoder reserved room for the frame");
        assert_eq!(err_code(&mut codec, &mut buf), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn an_announced_frame_reserves_only_a_little_ahead_of_what_arrived() {
        // 1 MiB announced, 3 bytes of it sent: the buffer stays small.
        let mut buf = BytesMut::new();
        prost::encoding::encode_varint(1 << 20, &mut buf);
        buf.extend_from_slice(b"abc");
        let mut codec = FrameCodec::<v1::Publish>::new(2 << 20);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= buf.len() + RESERVE_AHEAD_BYTES,
            "reserved {} bytes for 6 received",
            buf.capacity()
        );
    }

    fn err_code(codec: &mut FrameCodec<v1::Publish>, buf: &mut BytesMut) -> ErrorCode {
        codec.decode(buf).unwrap_err().code()
    }

    #[test]
    fn partial_prefix_already_over_the_limit_is_rejected() {
        // Two continuation bytes: the value is already >= 0x7f | 0x7f << 7.
        let mut buf = BytesMut::from(&[0xff, 0xff][..]);
        let mut codec = FrameCodec::<v1::Publish>::new(1000);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        // Under the limit, a partial prefix just waits.
        let mut buf = BytesMut::from(&[0x81][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn limit_is_inclusive_and_adjustable() {
        let p = v1::Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![1; 100]),
        };
        let len = prost::Message::encoded_len(&p);
        let mut wire = BytesMut::new();
        encode_frame(&p, &mut wire);

        let mut codec = FrameCodec::<v1::Publish>::new(len - 1);
        assert!(matches!(
            codec.decode(&mut wire.clone()),
            Err(FrameError::TooLarge { .. })
        ));
        codec.set_max_frame_bytes(len);
        assert_eq!(codec.max_frame_bytes(), len);
        assert_eq!(codec.decode(&mut wire).unwrap(), Some(p));
    }

    #[test]
    fn malformed_varint_is_rejected() {
        // Eleven continuation bytes: no valid u64 varint is that long.
        let mut buf = BytesMut::from(&[0x80u8; 11][..]);
        let mut codec = FrameCodec::<v1::Publish>::new(usize::MAX);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Malformed { .. })
        ));
        // Ten bytes whose last one carries bits beyond 64.
        let mut buf =
            BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn malformed_body_is_rejected() {
        // Length 3, body: field 1 (string) claiming 100 bytes.
        let mut buf = BytesMut::from(&[0x03, 0x0a, 0x64, 0x00][..]);
        let mut codec = FrameCodec::<v1::Publish>::new(1024);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::Protocol);
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        let p = v1::Publish {
            topic: "a.b".into(),
            payload: Bytes::from_static(b"hello"),
        };
        let mut wire = BytesMut::new();
        encode_frame(&p, &mut wire);
        for cut in 1..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut codec = FrameCodec::<v1::Publish>::new(1024);
            assert!(matches!(
                codec.decode_eof(&mut buf),
                Err(FrameError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn empty_message_is_a_one_byte_frame() {
        let mut buf = BytesMut::new();
        encode_frame(&v1::Ping { nonce: 0 }, &mut buf);
        assert_eq!(&buf[..], &[0x00]);
        let mut codec = FrameCodec::<v1::Ping>::new(0);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(v1::Ping { nonce: 0 }));
    }
}
