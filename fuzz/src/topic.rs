//! Target `topic`: [`validate_topic`] on arbitrary text.
//!
//! Topic names reach the server from every client, before anything else is
//! checked. Checked: no panic; a name is accepted exactly when it follows the
//! rules `proto/src/topic.rs` documents (re-stated here in a different
//! shape: split on dots instead of a state machine); and a rejection names
//! the first problem, at a byte position that really is that problem.
//!
//! An input with newlines is also read as `pattern\npattern\ntopic` for the
//! topic patterns of `proto/src/pattern.rs` (permissions, wildcard
//! subscriptions): a pattern parses exactly when its documented rules hold;
//! `matches` agrees with a matcher re-written here; and `covers` and
//! `overlaps` never contradict what the topic shows (a pattern covering
//! another matches every topic the other does; two patterns matching one
//! topic overlap, both ways).

use lapwing_proto::pattern::Pattern;
use lapwing_proto::topic::{validate_topic, TopicError, MAX_TOPIC_BYTES};

/// Runs one input: UTF-8 text (other inputs are skipped).
pub fn run(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if name.contains('\n') {
        patterns(name);
    }
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

/// The pattern rules, re-stated: a topic name whose tokens may also be
/// `*`, or `>` as the last token.
pub fn follows_pattern_rules(pattern: &str) -> bool {
    let tokens: Vec<&str> = pattern.split('.').collect();
    !pattern.is_empty()
        && pattern.len() <= MAX_TOPIC_BYTES
        && tokens.iter().enumerate().all(|(i, token)| {
            *token == "*" || (*token == ">" && i + 1 == tokens.len()) || follows_rules(token)
        })
}

fn allowed_or_dot(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.')
}

/// Checks the pattern functions on `first\nsecond\ntopic`.
fn patterns(input: &str) {
    let mut lines = input.splitn(3, '\n');
    let first = lines.next().unwrap_or_default();
    let second = lines.next().unwrap_or_default();
    let topic = lines.next().unwrap_or_default();
    let p = parsed(first);
    let q = parsed(second);
    let topic_tokens: Option<Vec<&str>> = follows_rules(topic).then(|| topic.split('.').collect());
    for (text, pattern) in [(first, &p), (second, &q)] {
        let Some(pattern) = pattern else { continue };
        assert!(
            pattern.covers(pattern) && pattern.overlaps(pattern),
            "{text:?}"
        );
        let parts: Vec<&str> = text.split('.').collect();
        assert_eq!(
            pattern.is_literal(),
            !parts.iter().any(|t| *t == "*" || *t == ">")
        );
        if let Some(tokens) = &topic_tokens {
            assert_eq!(
                pattern.matches(topic),
                matches(&parts, tokens),
                "{text:?} matching {topic:?}"
            );
        }
    }
    let (Some(p), Some(q)) = (p, q) else { return };
    assert_eq!(
        p.overlaps(&q),
        q.overlaps(&p),
        "overlaps is not symmetric: {input:?}"
    );
    if topic_tokens.is_none() {
        return;
    }
    if p.covers(&q) && q.matches(topic) {
        assert!(
            p.matches(topic),
            "{first:?} covers {second:?} but not {topic:?}"
        );
    }
    if q.covers(&p) && p.matches(topic) {
        assert!(
            q.matches(topic),
            "{second:?} covers {first:?} but not {topic:?}"
        );
    }
    if p.matches(topic) && q.matches(topic) {
        assert!(
            p.overlaps(&q),
            "{first:?} and {second:?} both match {topic:?}"
        );
    }
}

/// Parses `text`, checking acceptance against the documented rules: a
/// topic name whose tokens may also be `*`, or `>` as the last one.
fn parsed(text: &str) -> Option<Pattern> {
    let parts: Vec<&str> = text.split('.').collect();
    let rules = !text.is_empty()
        && text.len() <= MAX_TOPIC_BYTES
        && parts.iter().enumerate().all(|(i, part)| {
            *part == "*" || (*part == ">" && i + 1 == parts.len()) || follows_rules(part)
        });
    let result = Pattern::parse(text);
    assert_eq!(
        result.is_ok(),
        rules,
        "{text:?}: Pattern::parse says {result:?}"
    );
    if let Err(e) = &result {
        assert!(!e.to_string().is_empty());
    }
    result.ok()
}

/// A matcher written from the documentation, token by token.
fn matches(pattern: &[&str], topic: &[&str]) -> bool {
    match (pattern.split_first(), topic.split_first()) {
        (None, None) => true,
        (Some((&">", _)), Some(_)) => true,
        (Some((&"*", rest)), Some((_, topic_rest))) => matches(rest, topic_rest),
        (Some((literal, rest)), Some((token, topic_rest))) => {
            literal == token && matches(rest, topic_rest)
        }
        _ => false,
    }
}
