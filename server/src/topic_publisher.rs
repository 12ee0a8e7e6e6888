//! Publishing on behalf of one stream of one client, for both edges: name
//! lookup (auto-creation within the connection's topic-creation quota), the
//! per-topic size limit, the typed errors, and a cache of the topic used
//! last, since streams usually publish to one topic and the registry lock
//! can then be skipped.

use std::sync::Arc;

use bytes::Bytes;
use lapwing_proto::v1::PublishAck;

use crate::backbone::{Backbone, Pending};
use crate::error::RequestError;
use crate::permissions::{Action, Guard};
use crate::registry::{CreationQuota, Registry};
use crate::topic::{PublishError, Topic};

/// See the module docs.
#[derive(Debug)]
pub struct TopicPublisher {
    registry: Arc<Registry>,
    backbone: Option<Arc<Backbone>>,
    quota: Arc<CreationQuota>,
    guard: Guard,
    /// The topic used last; its name passed `guard` when it was cached, so
    /// a stream publishing to one topic checks its permission once.
    cached: Option<Arc<Topic>>,
    /// The backbone topic published to last (its name passed `guard`),
    /// with its largest payload.
    backbone_topic: Option<(Arc<str>, usize)>,
}

impl TopicPublisher {
    /// A publisher with an empty cache whose topic creations count against
    /// `quota` (its connection's), publishing as `guard`'s principal; in
    /// cluster mode, topics the `backbone` covers are published there.
    pub fn new(
        registry: Arc<Registry>,
        backbone: Option<Arc<Backbone>>,
        quota: Arc<CreationQuota>,
        guard: Guard,
    ) -> TopicPublisher {
        TopicPublisher {
            registry,
            backbone,
            quota,
            guard,
            cached: None,
            backbone_topic: None,
        }
    }

    /// Publishes `payload` to `topic`; returns its `{epoch, seq}`. A
    /// backbone topic's publish returns once the backbone has stored it.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &Bytes,
    ) -> Result<PublishAck, RequestError> {
        self.submit(topic, payload).await?.ack().await
    }

    /// Publishes `payload` to `topic` as far as it goes without waiting: a
    /// local topic's publish is done; a backbone topic's has been sent and
    /// its acknowledgement is still to come ([`Submitted::ack`]). A stream
    /// keeps many in flight and so pipelines the backbone's round trips;
    /// messages of one publisher reach the backbone in the order submitted.
    pub async fn submit(
        &mut self,
        topic: &str,
        payload: &Bytes,
    ) -> Result<Submitted, RequestError> {
        if let Some(backbone) = &self.backbone {
            // The topics used last answer without matching patterns: a
            // cached local topic is never a backbone name (the registry
            // refuses those), the cached backbone topic always is.
            let known = matches!(&self.backbone_topic, Some((name, _)) if &**name == topic);
            let local = matches!(&self.cached, Some(t) if t.name() == topic);
            if known || (!local && backbone.covers(topic)) {
                if !known {
                    lapwing_proto::validate_topic(topic)?;
                    self.guard.check(Action::Publish, topic)?;
                    let max = self.registry.settings_for(topic).max_message_bytes;
                    self.backbone_topic = Some((topic.into(), max));
                }
                let mut max = self.backbone_topic.as_ref().map_or(0, |(_, max)| *max);
                if let Some(nats) = backbone.max_payload() {
                    max = max.min(nats);
                }
                if payload.len() > max {
                    return Err(RequestError::MessageTooLarge {
                        topic: topic.to_owned(),
                        len: payload.len(),
                        max,
                    });
                }
                let pending = backbone
                    .submit(topic, payload.clone(), Some(&self.quota))
                    .await?;
                return Ok(Submitted::Pending(pending));
            }
        }
        self.publish_local(topic, payload).map(Submitted::Done)
    }

    fn publish_local(&mut self, topic: &str, payload: &[u8]) -> Result<PublishAck, RequestError> {
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
                Err(PublishError::Deleted) => self.cached = None,
                Err(e) => return Err(publish_error(topic, e)),
            }
        }
        Err(RequestError::Internal(format!(
            "topic `{topic}` was deleted while publishing; retry"
        )))
    }
}

/// A publish as far as [`TopicPublisher::submit`] took it.
#[derive(Debug)]
pub enum Submitted {
    /// Published (a local topic).
    Done(PublishAck),
    /// Sent to the backbone; its acknowledgement is to come.
    Pending(Pending),
}

impl Submitted {
    /// The publish's `{epoch, seq}`, once the backbone (if any) has
    /// acknowledged it.
    pub async fn ack(self) -> Result<PublishAck, RequestError> {
        match self {
            Submitted::Done(ack) => Ok(ack),
            Submitted::Pending(p) => p.ack().await,
        }
    }
}

/// A topic's refusal of a publish, as the client hears it.
pub(crate) fn publish_error(topic: &str, e: PublishError) -> RequestError {
    match e {
        PublishError::TooLarge { len, max } => RequestError::MessageTooLarge {
            topic: topic.to_owned(),
            len,
            max,
        },
        PublishError::Deleted => RequestError::TopicDeleted(topic.to_owned()),
        PublishError::Exhausted(e) => e.into(),
        PublishError::Ring(e) => RequestError::Internal(e.to_string()),
        PublishError::Backbone => RequestError::Internal(format!(
            "topic `{topic}` is served through the backbone; its publish took the local path"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publishes_and_follows_a_recreated_topic() {
        let config = crate::Config::for_tests(std::path::Path::new("/tmp/unused"));
        let registry = Arc::new(Registry::from_config(&config).unwrap());
        let everything = Arc::new(crate::permissions::Principal::everything("test"));
        let guard = Guard::new(everything, Arc::default());
        let quota = Arc::new(CreationQuota::new(10));
        let mut p = TopicPublisher::new(registry.clone(), None, quota, guard);
        let bytes = |b: &'static [u8]| Bytes::from_static(b);
        let a = p.publish("a", &bytes(b"x")).await.unwrap();
        assert_eq!(a.seq, 0);
        assert_eq!(p.publish("a", &bytes(b"y")).await.unwrap().seq, 1);
        registry.delete("a").unwrap();
        let b = p.publish("a", &bytes(b"z")).await.unwrap();
        assert_eq!(b.seq, 0);
        assert_ne!(a.epoch, b.epoch);
        let too_big = Bytes::from(vec![0u8; config.limits.max_message_bytes + 1]);
        assert!(matches!(
            p.publish("a", &too_big).await,
            Err(RequestError::MessageTooLarge { .. })
        ));
        assert!(matches!(
            p.publish("bad..name", &bytes(b"")).await,
            Err(RequestError::InvalidTopic(_))
        ));
    }
}
