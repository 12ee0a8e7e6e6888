//! The one frame the server writes by hand: a `Delivery` carrying a
//! `Message`, encoded straight from a payload borrowed from the ring.
//!
//! Every other frame goes through prost ([`crate::encode_frame`]). This one
//! is written once per message per subscriber, so the fields around the
//! payload are assembled on the stack instead of building an owned
//! `Message` (which would copy the payload). The bytes are exactly what
//! prost produces for the same `Delivery`; a test checks every varint
//! width of every field.

use bytes::BytesMut;

/// Appends one length-delimited `Delivery { message: Message { seq,
/// payload, publish_time_unix_nanos, epoch, topic } }` frame to `out`
/// (`topic` is empty except on a wildcard subscription).
pub fn encode_message_frame(
    out: &mut BytesMut,
    seq: u64,
    epoch: u64,
    time: u64,
    topic: &str,
    payload: &[u8],
) {
    let frame = MessageFrame::new(seq, epoch, time, topic, payload.len());
    out.reserve(frame.len());
    frame.put_head(out);
    out.extend_from_slice(payload);
    frame.put_tail(out);
}

/// The bytes of a `Message` delivery frame around its payload, for a
/// caller that puts the payload in place itself (the QUIC edge copies it
/// straight out of the ring, between [`MessageFrame::put_head`] and
/// [`MessageFrame::put_tail`]). Only the payload's length is needed here.
#[derive(Debug, Clone, Copy)]
pub struct MessageFrame<'t> {
    /// Frame length, Delivery tag, Message length, seq, payload tag and
    /// length: at most 10 + 1 + 10 + 11 + 11 bytes.
    head: Varints<48>,
    /// Time and epoch, at most 11 bytes each, and the topic's tag and
    /// length (at most 1 + 10); the topic's bytes follow.
    tail: Varints<40>,
    topic: &'t str,
    payload_len: usize,
}

impl<'t> MessageFrame<'t> {
    /// The frame of a message of `payload_len` bytes.
    #[inline(always)]
    pub fn new(seq: u64, epoch: u64, time: u64, topic: &'t str, payload_len: usize) -> Self {
        use prost::encoding::encoded_len_varint as vlen;
        // Message fields: 1 seq (varint), 2 payload (bytes), 3 time (varint),
        // 4 epoch (varint), 5 topic (string); proto3 omits zero values, as
        // prost does. This runs once per message per subscriber, so the
        // fields around the payload are assembled on the stack and appended
        // with a few copies instead of one bounds-checked `put_u8` per
        // varint byte (profiled: prost's `encode_varint` was ~9 % of server
        // CPU in a 100-subscriber fanout). Always inlined: the server's
        // drain loop is in another crate and too large for the inliner to
        // take this in by itself, and as a call the frame was built here
        // and then copied out to the caller (the proto bench `frame`:
        // 40 -> 26 ns per 64 B frame with inlining).
        let varint_field = |v: u64| if v == 0 { 0 } else { 1 + vlen(v) };
        let payload_field = if payload_len == 0 {
            0
        } else {
            1 + vlen(payload_len as u64) + payload_len
        };
        let topic_field = if topic.is_empty() {
            0
        } else {
            1 + vlen(topic.len() as u64) + topic.len()
        };
        let msg_len = varint_field(seq)
            + payload_field
            + varint_field(time)
            + varint_field(epoch)
            + topic_field;
        // Delivery field 1 (`message`), length-delimited.
        let body_len = 1 + vlen(msg_len as u64) + msg_len;

        let mut head = Varints::new();
        head.varint(body_len as u64);
        head.byte(0x0a);
        head.varint(msg_len as u64);
        if seq != 0 {
            head.byte(0x08);
            head.varint(seq);
        }
        if payload_len != 0 {
            head.byte(0x12);
            head.varint(payload_len as u64);
        }
        let mut tail = Varints::new();
        if time != 0 {
            tail.byte(0x18);
            tail.varint(time);
        }
        if epoch != 0 {
            tail.byte(0x20);
            tail.varint(epoch);
        }
        if !topic.is_empty() {
            tail.byte(0x2a);
            tail.varint(topic.len() as u64);
        }
        MessageFrame {
            head,
            tail,
            topic,
            payload_len,
        }
    }

    /// The whole frame's length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.head.len + self.payload_len + self.tail.len + self.topic.len()
    }

    /// Never true: a frame has at least its length and tag.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends what goes before the payload.
    #[inline]
    pub fn put_head(&self, out: &mut BytesMut) {
        out.extend_from_slice(self.head.bytes());
    }

    /// Appends what goes after the payload.
    #[inline]
    pub fn put_tail(&self, out: &mut BytesMut) {
        out.extend_from_slice(self.tail.bytes());
        out.extend_from_slice(self.topic.as_bytes());
    }
}

/// A few protobuf varints and tag bytes assembled on the stack.
#[derive(Debug, Clone, Copy)]
struct Varints<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Varints<N> {
    fn new() -> Self {
        Varints {
            buf: [0; N],
            len: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn varint(&mut self, mut v: u64) {
        // A local index keeps the length in a register inside the loop.
        let mut i = self.len;
        while v >= 0x80 {
            self.buf[i] = (v as u8) | 0x80;
            v >>= 7;
            i += 1;
        }
        self.buf[i] = v as u8;
        self.len = i + 1;
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_frame, v1};

    #[test]
    fn varints_match_prost_at_every_width() {
        let mut values = vec![0, u64::MAX];
        for bit in 1..64 {
            let v = 1u64 << bit;
            values.extend([v - 1, v, v + 1, v | (v >> 1) | 0x55]);
        }
        for v in values {
            let mut ours = Varints::<48>::new();
            ours.byte(0x08);
            ours.varint(v);
            ours.varint(v);
            let mut theirs = vec![0x08];
            prost::encoding::encode_varint(v, &mut theirs);
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours.bytes(), &theirs[..], "{v:#x}");
        }
    }

    #[test]
    fn message_frames_match_prost_at_varint_boundaries() {
        // Every varint width of every field, the largest values included.
        let values = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            (1 << 56) - 1,
            1 << 56,
            1_796_000_000_000_000_000, // a publish time, in nanoseconds
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
        ];
        let payload = vec![7u8; 20_000];
        // Topic lengths around the one-byte varint boundary.
        let long_topic = "t".repeat(200);
        for &seq in &values {
            for &time in &values {
                for &epoch in &values {
                    for len in [0, 1, 127, 128, 16_384, 20_000] {
                        for topic in ["", "prices.eur", &long_topic[..127], &long_topic[..]] {
                            let payload = &payload[..len];
                            let mut manual = BytesMut::new();
                            encode_message_frame(&mut manual, seq, epoch, time, topic, payload);
                            let owned = v1::Delivery {
                                kind: Some(v1::delivery::Kind::Message(v1::Message {
                                    seq,
                                    payload: bytes::Bytes::copy_from_slice(payload),
                                    publish_time_unix_nanos: time,
                                    epoch,
                                    topic: topic.to_owned(),
                                })),
                            };
                            let mut via_prost = BytesMut::new();
                            encode_frame(&owned, &mut via_prost);
                            assert_eq!(
                                manual,
                                via_prost,
                                "seq {seq} time {time} epoch {epoch} len {len} topic {}",
                                topic.len()
                            );
                        }
                    }
                }
            }
        }
    }
}
