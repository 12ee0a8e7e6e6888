//! Topic naming rules.
//!
//! A topic is one or more dot-separated tokens; each token is non-empty and
//! made of ASCII letters, digits, `_` and `-`; the whole name is at most
//! [`MAX_TOPIC_BYTES`] bytes. `*` and `>` are not topic characters: they
//! are the wildcards of a subscribe pattern (`crate::pattern`), and a topic
//! name containing them is rejected like any other character.

/// Longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 255;

/// What is wrong with a topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name is the empty string.
    #[error("topic name is empty")]
    Empty,
    /// The name is over [`MAX_TOPIC_BYTES`].
    #[error("topic name is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// [`MAX_TOPIC_BYTES`].
        max: usize,
    },
    /// A leading or trailing dot, or two dots in a row.
    #[error("topic name has an empty token at byte {position} (leading, trailing or double dot)")]
    EmptyToken {
        /// Byte offset of the empty token.
        position: usize,
    },
    /// A character outside `A-Z a-z 0-9 _ -` and the separating dots
    /// (including the reserved wildcards `*` and `>`).
    #[error(
        "topic name has invalid character {ch:?} at byte {position}; \
         allowed are A-Z a-z 0-9 _ - and . between tokens"
    )]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        position: usize,
    },
}

/// Checks `topic` against the naming rules and says exactly what is wrong.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong {
            len: topic.len(),
            max: MAX_TOPIC_BYTES,
        });
    }
    let mut token_start = true;
    for (position, ch) in topic.char_indices() {
        match ch {
            '.' if token_start => return Err(TopicError::EmptyToken { position }),
            '.' => token_start = true,
            'A'..='Z' | 'a'..='z' | '0'..='9' | '_' | '-' => token_start = false,
            _ => return Err(TopicError::InvalidChar { ch, position }),
        }
    }
    if token_start {
        return Err(TopicError::EmptyToken {
            position: topic.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts() {
        let long = format!("{}.{}", "a".repeat(127), "b".repeat(127));
        assert_eq!(long.len(), 255);
        for t in [
            "a",
            "A",
            "0",
            "_",
            "-",
            "prices",
            "prices.eur-usd",
            "a.b.c.d.e",
            "Sensor_42.temp-C",
            "x.1.y",
            long.as_str(),
        ] {
            assert_eq!(validate_topic(t), Ok(()), "{t:?}");
        }
    }

    #[test]
    fn rejects() {
        use TopicError::*;
        let too_long = "a".repeat(256);
        let cases: &[(&str, TopicError)] = &[
            ("", Empty),
            (&too_long, TooLong { len: 256, max: 255 }),
            (".a", EmptyToken { position: 0 }),
            ("a.", EmptyToken { position: 2 }),
            ("a..b", EmptyToken { position: 2 }),
            (".", EmptyToken { position: 0 }),
            (
                "a b",
                InvalidChar {
                    ch: ' ',
                    position: 1,
                },
            ),
            (
                "a.*",
                InvalidChar {
                    ch: '*',
                    position: 2,
                },
            ),
            (
                "a.>",
                InvalidChar {
                    ch: '>',
                    position: 2,
                },
            ),
            (
                "a/b",
                InvalidChar {
                    ch: '/',
                    position: 1,
                },
            ),
            (
                "é",
                InvalidChar {
                    ch: 'é',
                    position: 0,
                },
            ),
            (
                "a\0",
                InvalidChar {
                    ch: '\0',
                    position: 1,
                },
            ),
            (
                "a\n",
                InvalidChar {
                    ch: '\n',
                    position: 1,
                },
            ),
        ];
        for (t, want) in cases {
            assert_eq!(validate_topic(t).as_ref(), Err(want), "{t:?}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = validate_topic("a b").unwrap_err().to_string();
        assert!(msg.contains("' '") && msg.contains("byte 1"), "{msg}");
    }
}
