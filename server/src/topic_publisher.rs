//! Publishing on behalf of one stream of one client, for both edges: name
//! lookup (auto-creation within the connection's topic-creation quota), the
//! per-topic size limit, the typed errors, and a cache of the topic used
//! last, since streams usually publish to one topic and the registry lock
//! can then be skipped.

use std::sync::Arc;

use lapwing_proto::v1::PublishAck;

use crate::error::RequestError;
use crate::permissions::{Action, Guard};
use crate::registry::{CreationQuota, Registry};
use crate::topic::{PublishError, Topic};

/// See the module docs.
#[derive(Debug)]
pub struct TopicPublisher {
    registry: Arc<Registry>,
    quota: Arc<CreationQuota>,
    guard: Guard,
    /// The topic used last; its name passed `guard` when it was cached, so
    /// a stream publishing to one topic checks its permission once.
    cached: Option<Arc<Topic>>,
}

impl TopicPublisher {
    /// A publisher with an empty cache whose topic creations count against
    /// `quota` (its connection's), publishing as `guard`'s principal.
    pub fn new(registry: Arc<Registry>, quota: Arc<CreationQuota>, guard: Guard) -> TopicPublisher {
        TopicPublisher {
            registry,
            quota,
            guard,
            cached: None,
        }
    }

    /// Publishes `payload` to `topic`; returns its `{epoch, seq}`.
    pub fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<PublishAck, RequestError> {
        // A topic deleted between lookup and publish: the name now means a
        // new topic, so look it up once more (bounded: at most twice).
        for _ in 0..2 {
            let t = match &self.cached {
                Some(t) if t.name() == topic && !t.is_deleted() => t.clone(),
                _ => {
                    // A pattern is no place to publish to: INVALID_TOPIC
                    // before any permission is looked at.
                    lapwing_proto::validate_topic(topic)?;
                    self.guard.check(Action::Publish, topic)?;
                    let t = self
                        .registry
                        .get_or_create_within(topic, Some(&self.quota))?;
                    self.cached = Some(t.clone());
                    t
                }
            };
            match t.publish(payload) {
                Ok(seq) => {
                    return Ok(PublishAck {
                        epoch: t.epoch(),
                        seq,
                    })
                }
                Err(PublishError::TooLarge { len, max }) => {
                    return Err(RequestError::MessageTooLarge {
                        topic: topic.to_owned(),
                        len,
                        max,
                    })
                }
                Err(PublishError::Deleted) => self.cached = None,
                Err(PublishError::Exhausted(e)) => return Err(e.into()),
                Err(PublishError::Ring(e)) => return Err(RequestError::Internal(e.to_string())),
            }
        }
        Err(RequestError::Internal(format!(
            "topic `{topic}` was deleted while publishing; retry"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_and_follows_a_recreated_topic() {
        let config = crate::Config::for_tests(std::path::Path::new("/tmp/unused"));
        let registry = Arc::new(Registry::from_config(&config).unwrap());
        let everything = Arc::new(crate::permissions::Principal::everything("test"));
        let guard = Guard::new(everything, Arc::default());
        let mut p = TopicPublisher::new(registry.clone(), Arc::new(CreationQuota::new(10)), guard);
        let a = p.publish("a", b"x").unwrap();
        assert_eq!(a.seq, 0);
        assert_eq!(p.publish("a", b"y").unwrap().seq, 1);
        registry.delete("a").unwrap();
        let b = p.publish("a", b"z").unwrap();
        assert_eq!(b.seq, 0);
        assert_ne!(a.epoch, b.epoch);
        let too_big = vec![0u8; config.limits.max_message_bytes + 1];
        assert!(matches!(
            p.publish("a", &too_big),
            Err(RequestError::MessageTooLarge { .. })
        ));
        assert!(matches!(
            p.publish("bad..name", b""),
            Err(RequestError::InvalidTopic(_))
        ));
    }
}
