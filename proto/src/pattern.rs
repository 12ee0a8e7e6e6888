//! Topic patterns, as NATS users know them: the one matcher behind
//! permissions and wildcard subscriptions.
//!
//! A pattern is a topic name whose tokens may also be `*` (exactly one
//! token) or, as the last token only, `>` (one or more tokens): `prices.*`
//! matches `prices.eur` but not `prices` or `prices.eur.spot`; `prices.>`
//! matches `prices.eur` and `prices.eur.spot` but not `prices`. A pattern
//! without wildcards matches exactly that topic.
//!
//! Besides matching a topic, two patterns can be compared:
//! [`Pattern::covers`] (every topic the other matches, this one matches
//! too: how a wildcard subscribe is checked against a grant) and
//! [`Pattern::overlaps`] (some topic matches both: how it is checked
//! against a deny rule). Both work on the token sequences directly, and a
//! property test checks them against a brute-force enumeration of topics.

use std::fmt;

use crate::topic::{validate_topic, TopicError, MAX_TOPIC_BYTES};

/// A parsed pattern; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Token {
    Literal(String),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens (last only).
    Rest,
}

/// What is wrong with a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A literal part breaks the topic rules.
    #[error("invalid pattern: {0}")]
    Topic(#[from] TopicError),
    /// `>` somewhere but last.
    #[error("`>` may only be the last token of a pattern (at token {position})")]
    RestNotLast {
        /// Index of the token.
        position: usize,
    },
    /// A token mixing a wildcard with other characters, e.g. `pri*`.
    #[error("`*` and `>` must be whole tokens, not part of `{token}`")]
    PartialWildcard {
        /// The token.
        token: String,
    },
}

impl Pattern {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(TopicError::Empty.into());
        }
        if text.len() > MAX_TOPIC_BYTES {
            return Err(TopicError::TooLong {
                len: text.len(),
                max: MAX_TOPIC_BYTES,
            }
            .into());
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut tokens = Vec::with_capacity(parts.len());
        let mut offset = 0;
        for (i, part) in parts.iter().enumerate() {
            let token = match *part {
                "*" => Token::One,
                ">" if i + 1 == parts.len() => Token::Rest,
                ">" => return Err(PatternError::RestNotLast { position: i }),
                p if p.contains(['*', '>']) => {
                    return Err(PatternError::PartialWildcard {
                        token: p.to_owned(),
                    })
                }
                p => {
                    // The topic rules, with positions in the whole text.
                    validate_topic(p).map_err(|e| shift(e, offset))?;
                    Token::Literal(p.to_owned())
                }
            };
            tokens.push(token);
            offset += part.len() + 1;
        }
        Ok(Pattern {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it has no wildcard (it names exactly one topic).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether `topic` (a valid topic name) matches.
    pub fn matches(&self, topic: &str) -> bool {
        let mut topic = topic.split('.');
        for token in &self.tokens {
            match token {
                Token::Rest => return topic.next().is_some(),
                Token::One => {
                    if topic.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(l) => {
                    if topic.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        topic.next().is_none()
    }

    /// Whether every topic `other` matches, this pattern matches too.
    pub fn covers(&self, other: &Pattern) -> bool {
        covers(&self.tokens, &other.tokens)
    }

    /// Whether some topic matches both.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        overlaps(&self.tokens, &other.tokens)
    }
}

fn covers(a: &[Token], b: &[Token]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        // `>` takes whatever non-empty rest `b` requires.
        (Some((Token::Rest, _)), Some(_)) => true,
        (None, Some(_)) | (Some(_), None) => false,
        // Only `>` covers `>` (any number of tokens).
        (Some(_), Some((Token::Rest, _))) => false,
        (Some((Token::One, a)), Some((_, b))) => covers(a, b),
        (Some((Token::Literal(x), a)), Some((Token::Literal(y), b))) => x == y && covers(a, b),
        (Some((Token::Literal(_), _)), Some((Token::One, _))) => false,
    }
}

fn overlaps(a: &[Token], b: &[Token]) -> bool {
    match (a.split_first(), b.split_first()) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((Token::Rest, _)), Some(_)) | (Some(_), Some((Token::Rest, _))) => true,
        (Some((Token::Literal(x), a)), Some((Token::Literal(y), b))) => x == y && overlaps(a, b),
        (Some((_, a)), Some((_, b))) => overlaps(a, b),
    }
}

fn shift(e: TopicError, by: usize) -> TopicError {
    match e {
        TopicError::EmptyToken { position } => TopicError::EmptyToken {
            position: position + by,
        },
        TopicError::InvalidChar { ch, position } => TopicError::InvalidChar {
            ch,
            position: position + by,
        },
        TopicError::Empty => TopicError::EmptyToken { position: by },
        other => other,
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn matching_follows_nats() {
        assert!(p("prices.*").matches("prices.eur"));
        assert!(!p("prices.*").matches("prices"));
        assert!(!p("prices.*").matches("prices.eur.spot"));
        assert!(p("prices.>").matches("prices.eur"));
        assert!(p("prices.>").matches("prices.eur.spot"));
        assert!(!p("prices.>").matches("prices"));
        assert!(p(">").matches("a.b.c"));
        assert!(p("a.*.c").matches("a.x.c"));
        assert!(p("prices.eur").matches("prices.eur"));
        assert!(!p("prices.eur").matches("prices.eu"));
        assert!(p("prices.eur").is_literal());
        assert!(!p("*").is_literal());
    }

    #[test]
    fn bad_patterns_say_why() {
        assert_eq!(
            Pattern::parse("a.>.b"),
            Err(PatternError::RestNotLast { position: 1 })
        );
        assert!(matches!(
            Pattern::parse("pri*"),
            Err(PatternError::PartialWildcard { .. })
        ));
        assert!(matches!(
            Pattern::parse("a..b"),
            Err(PatternError::Topic(TopicError::EmptyToken { position: 2 }))
        ));
        assert!(matches!(
            Pattern::parse("a.b c"),
            Err(PatternError::Topic(TopicError::InvalidChar {
                position: 3,
                ..
            }))
        ));
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn covers_and_overlaps_examples() {
        assert!(p("prices.>").covers(&p("prices.*")));
        assert!(p("prices.*").covers(&p("prices.eur")));
        assert!(!p("prices.eur").covers(&p("prices.*")));
        assert!(!p("prices.*").covers(&p("prices.>")));
        assert!(p("prices.*").overlaps(&p("prices.internal")));
        assert!(!p("prices.*").overlaps(&p("orders.>")));
        assert!(p("*.eur").overlaps(&p("prices.*")));
    }

    /// Every topic over the tokens {a, b, z} with 1..=5 tokens: enough to
    /// find a witness for any two patterns of at most 4 tokens over {a, b}
    /// (`z` stands for "any other token", one more token for `>`).
    fn universe() -> Vec<String> {
        let mut all: Vec<String> = vec![String::new()];
        let mut out = Vec::new();
        for _ in 0..5 {
            let mut next = Vec::new();
            for prefix in &all {
                for t in ["a", "b", "z"] {
                    let topic = if prefix.is_empty() {
                        t.to_owned()
                    } else {
                        format!("{prefix}.{t}")
                    };
                    out.push(topic.clone());
                    next.push(topic);
                }
            }
            all = next;
        }
        out
    }

    fn pattern_strategy() -> impl Strategy<Value = Pattern> {
        (
            prop::collection::vec(prop_oneof!["a", "b", Just("*".to_owned())], 0..4),
            any::<bool>(),
        )
            .prop_filter_map("non-empty", |(mut tokens, rest)| {
                if rest {
                    tokens.push(">".to_owned());
                }
                (!tokens.is_empty()).then(|| p(&tokens.join(".")))
            })
    }

    proptest! {
        #[test]
        fn covers_and_overlaps_agree_with_brute_force(a in pattern_strategy(), b in pattern_strategy()) {
            let universe = universe();
            let in_a = |t: &String| a.matches(t);
            let in_b = |t: &String| b.matches(t);
            let covers = universe.iter().filter(|t| in_b(t)).all(in_a);
            let overlaps = universe.iter().any(|t| in_a(t) && in_b(t));
            prop_assert_eq!(a.covers(&b), covers, "{} covers {}", a, b);
            prop_assert_eq!(a.overlaps(&b), overlaps, "{} overlaps {}", a, b);
            // The algebra: covering is reflexive and implies overlapping;
            // overlapping is symmetric.
            prop_assert!(a.covers(&a));
            prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
            if a.covers(&b) {
                prop_assert!(a.overlaps(&b));
            }
        }

        #[test]
        fn a_literal_pattern_matches_exactly_its_topic(t in "[a-c]{1,3}(\\.[a-c]{1,3}){0,3}") {
            let lit = p(&t);
            prop_assert!(lit.is_literal());
            prop_assert!(lit.matches(&t));
            for u in universe() {
                prop_assert_eq!(lit.matches(&u), u == t);
            }
        }
    }
}
