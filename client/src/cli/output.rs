//! How events are printed: human lines or one JSON object per line.

use std::io::Write;

use serde_json::json;

use crate::{resync_reason_name, Event};

/// `!! RESYNC ...` in bold red on a terminal.
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// One event as one line.
///
/// JSON: `{"event":"message","topic","epoch","seq","payload_len","payload",
/// "payload_encoding"}` where `payload` is the payload as a string if it is
/// valid UTF-8 (`"payload_encoding":"utf8"`), else standard base64 with
/// padding (`"base64"`); or `{"event":"resync","topic","epoch","missed",
/// "resume_seq","reason"}`.
///
/// Human: `topic seq=S: payload` (non-UTF-8 payloads as `<N bytes>`), and
/// resyncs as `!! RESYNC topic=T missed=N resume_seq=S reason=R epoch=E`
/// on the same stream, so they appear where they happened; a wildcard
/// subscription's new topics as `-- joined topic=T epoch=E start_seq=S`
/// and deleted ones as `-- left topic=T (deleted)`.
pub(crate) fn write_event(
    out: &mut (dyn Write + Send),
    event: &Event,
    json: bool,
    color: bool,
) -> std::io::Result<()> {
    match (event, json) {
        (
            Event::Message {
                topic,
                epoch,
                seq,
                payload,
                ..
            },
            true,
        ) => {
            let (text, encoding) = match std::str::from_utf8(payload) {
                Ok(s) => (s.to_owned(), "utf8"),
                Err(_) => (base64_encode(payload), "base64"),
            };
            let v = json!({
                "event": "message",
                "topic": &**topic,
                "epoch": epoch,
                "seq": seq,
                "payload_len": payload.len(),
                "payload": text,
                "payload_encoding": encoding,
            });
            writeln!(out, "{v}")
        }
        (
            Event::Resync {
                topic,
                missed,
                resume_seq,
                reason,
                epoch,
            },
            true,
        ) => {
            let v = json!({
                "event": "resync",
                "topic": &**topic,
                "epoch": epoch,
                "missed": missed,
                "resume_seq": resume_seq,
                "reason": resync_reason_name(*reason),
            });
            writeln!(out, "{v}")
        }
        (
            Event::Message {
                topic,
                seq,
                payload,
                ..
            },
            false,
        ) => match std::str::from_utf8(payload) {
            Ok(s) => writeln!(out, "{topic} seq={seq}: {}", s.escape_debug()),
            Err(_) => writeln!(out, "{topic} seq={seq}: <{} bytes>", payload.len()),
        },
        (
            Event::Resync {
                topic,
                missed,
                resume_seq,
                reason,
                epoch,
            },
            false,
        ) => {
            let (on, off) = if color { (RED, RESET) } else { ("", "") };
            writeln!(
                out,
                "{on}!! RESYNC topic={topic} missed={missed} resume_seq={resume_seq} reason={} epoch={epoch}{off}",
                resync_reason_name(*reason)
            )
        }
        (
            Event::Joined {
                topic,
                epoch,
                start_seq,
            },
            true,
        ) => {
            let v = json!({
                "event": "joined",
                "topic": &**topic,
                "epoch": epoch,
                "start_seq": start_seq,
            });
            writeln!(out, "{v}")
        }
        (
            Event::Joined {
                topic,
                epoch,
                start_seq,
            },
            false,
        ) => writeln!(
            out,
            "-- joined topic={topic} epoch={epoch} start_seq={start_seq}"
        ),
        (Event::Left { topic }, true) => {
            writeln!(out, "{}", json!({"event": "left", "topic": &**topic}))
        }
        (Event::Left { topic }, false) => writeln!(out, "-- left topic={topic} (deleted)"),
    }
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
    }

    #[test]
    fn json_lines() {
        let mut out = Vec::new();
        let msg = Event::Message {
            topic: "a.b".into(),
            epoch: 7,
            seq: 3,
            payload: bytes::Bytes::from_static(&[0xff, 0x00]),
            publish_time_unix_nanos: 0,
        };
        write_event(&mut out, &msg, true, false).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["payload"], "/wA=");
        assert_eq!(v["payload_encoding"], "base64");
        assert_eq!(v["payload_len"], 2);
        out.clear();
        let resync = Event::Resync {
            topic: "a.b".into(),
            missed: 5,
            resume_seq: 9,
            reason: crate::ResyncReason::Lapped,
            epoch: 7,
        };
        write_event(&mut out, &resync, false, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "!! RESYNC topic=a.b missed=5 resume_seq=9 reason=lapped epoch=7\n"
        );
    }
}
