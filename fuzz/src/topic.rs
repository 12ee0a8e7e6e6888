//! Target `topic`: [`validate_topic`] on arbitrary text.
//!
//! Topic names reach the server from every client, before anything else is
//! checked. Checked: no panic; a name is accepted exactly when it follows the
//! rules `proto/src/topic.rs` documents (re-stated here in a different
//! shape: split on dots instead of a state machine); and a rejection names
//! the first problem, at a byte position that really is that problem.

use lapwing_proto::topic::{validate_topic, TopicError, MAX_TOPIC_BYTES};

/// Runs one input: UTF-8 text (other inputs are skipped).
pub fn run(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let result = validate_topic(name);
    assert_eq!(
        result.is_ok(),
        follows_rules(name),
        "{name:?}: validate_topic says {result:?}"
    );
    let Err(err) = result else {
        return;
    };
    assert!(!err.to_string().is_empty());
    match err {
        TopicError::Empty => assert!(name.is_empty()),
        TopicError::TooLong { len, max } => {
            assert_eq!((len, max), (name.len(), MAX_TOPIC_BYTES));
            assert!(len > max);
        }
        TopicError::EmptyToken { position } => {
            assert!(name.len() <= MAX_TOPIC_BYTES);
            let before = &name[..position];
            assert!(
                before.chars().all(allowed_or_dot),
                "an earlier problem in {name:?}"
            );
            let at_dot = name[position..].starts_with('.');
            assert!(
                at_dot || position == name.len(),
                "EmptyToken at {position} of {name:?} is neither a dot nor the end"
            );
            assert!(
                position == 0 || before.ends_with('.'),
                "EmptyToken at {position} of {name:?} does not end an empty token"
            );
        }
        TopicError::InvalidChar { ch, position } => {
            assert!(name.len() <= MAX_TOPIC_BYTES);
            assert!(
                name[position..].starts_with(ch),
                "{ch:?} is not at {position}"
            );
            assert!(!allowed_or_dot(ch), "{ch:?} is allowed");
            let before = &name[..position];
            assert!(
                before.chars().all(allowed_or_dot),
                "an earlier problem in {name:?}"
            );
            assert!(!before.starts_with('.') && !before.contains(".."));
        }
    }
}

/// The documented rules: one or more dot-separated tokens, each non-empty
/// and made of ASCII letters, digits, `_` and `-`; at most
/// [`MAX_TOPIC_BYTES`] bytes in all.
pub fn follows_rules(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOPIC_BYTES
        && name.split('.').all(|token| {
            !token.is_empty()
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

fn allowed_or_dot(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.')
}
