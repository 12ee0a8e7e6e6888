//! The set of topics: created on first use with the configured settings, or
//! explicitly (the admin API's create/delete/list/stats).
//!
//! A std `RwLock` over a `HashMap`, as mini-redis does: it is held only for
//! a lookup or an insert, never across an `.await`, and lookups are rare on
//! the hot path because publish streams cache the `Arc<Topic>` they last
//! used. Topic settings come from `[[topics]]` overrides (exact name, then
//! longest prefix) or the defaults.
//!
//! What clients can make it hold is bounded three ways: `limits.max_topics`
//! topics in all, `limits.topics_created_per_connection` new topics per
//! connection ([`CreationQuota`]), and `limits.ring_memory_bytes` of ring
//! memory (a [`Budget`] every topic's ring is reserved from). Topics that
//! clients created and then abandoned (no subscriber, no publish for
//! `limits.idle_topic_ttl_ms`) are reaped by [`Registry::reap_idle`], so the
//! registry never fills for good.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use lapwing_proto::pattern::Pattern;
use lapwing_proto::topic::{validate_topic, TopicError};
use tokio::sync::broadcast;

use crate::budget::Budget;
use crate::config::Config;
use crate::error::Exhausted;
use crate::history::History;
use crate::topic::{check_ring_config, now_unix_nanos, Topic, TopicSettings, TopicStats};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name breaks the naming rules.
    #[error("invalid topic name: {0}")]
    InvalidName(#[from] TopicError),
    /// No such topic (and auto-creation is off, for lookups).
    #[error("topic `{0}` does not exist")]
    NotFound(String),
    /// Explicit create of a name that exists.
    #[error("topic `{0}` already exists")]
    AlreadyExists(String),
    /// A budget is used up: `max_topics`, or the caller's creation quota.
    #[error(transparent)]
    Exhausted(#[from] Exhausted),
    /// Explicit create with settings that cannot make a ring.
    #[error("invalid topic settings: {0}")]
    InvalidSettings(String),
    /// A backbone topic this node does not follow yet: only the backbone
    /// creates it here ([`Registry::get_or_create_backbone`]).
    #[error("topic `{0}` is served through the backbone and is not ready on this node")]
    NotReady(String),
}

#[derive(Debug, Clone)]
struct Override {
    name: Option<String>,
    prefix: Option<String>,
    ring_bytes: Option<usize>,
    max_message_bytes: Option<usize>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Registry {
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    defaults: TopicSettings,
    overrides: Vec<Override>,
    auto_create: bool,
    max_topics: usize,
    max_message_bytes: usize,
    memory: Arc<Budget>,
    reaped: AtomicU64,
    /// The name of every topic created, for wildcard subscriptions
    /// ([`Registry::watch_created`]).
    created: broadcast::Sender<Arc<str>>,
    /// Cluster mode: the names served through the backbone
    /// (`backbone.topics`); never a local topic.
    backbone: Vec<Pattern>,
    /// The patterns of live wildcard subscriptions, with how many hold
    /// each: in cluster mode the backbone makes this node follow every
    /// backbone topic one of them matches, including topics created on
    /// other nodes ([`Registry::wanted`]).
    interests: std::sync::Mutex<HashMap<Arc<str>, (Pattern, usize)>>,
}

/// Creations a wildcard subscription may fall behind by before it has to
/// rescan the registry instead (`broadcast`'s lag).
const CREATED_BACKLOG: usize = 1024;

/// How many topics one connection may still create by publishing or
/// subscribing (`limits.topics_created_per_connection`).
#[derive(Debug)]
pub struct CreationQuota {
    limit: u32,
    used: AtomicU32,
}

impl CreationQuota {
    /// A quota of `limit` creations.
    pub fn new(limit: u32) -> CreationQuota {
        CreationQuota {
            limit,
            used: AtomicU32::new(0),
        }
    }

    pub(crate) fn take(&self) -> Result<(), Exhausted> {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                (u < self.limit).then_some(u + 1)
            })
            .map(|_| ())
            .map_err(|_| Exhausted::TopicQuota { limit: self.limit })
    }
}

impl Registry {
    /// A registry from a validated config; topics named in `[[topics]]`
    /// entries are created now.
    pub fn from_config(config: &Config) -> Result<Registry, RegistryError> {
        let registry = Registry {
            topics: RwLock::new(HashMap::new()),
            defaults: TopicSettings {
                ring_bytes: config.topic_defaults.ring_bytes,
                max_message_bytes: config.limits.max_message_bytes,
            },
            overrides: config
                .topics
                .iter()
                .map(|t| Override {
                    name: t.name.clone(),
                    prefix: t.prefix.clone(),
                    ring_bytes: t.ring_bytes,
                    max_message_bytes: t.max_message_bytes,
                })
                .collect(),
            auto_create: config.topic_defaults.auto_create,
            max_topics: config.limits.max_topics,
            max_message_bytes: config.limits.max_message_bytes,
            memory: Budget::new(config.limits.ring_memory_bytes),
            reaped: AtomicU64::new(0),
            created: broadcast::channel(CREATED_BACKLOG).0,
            backbone: config.backbone.patterns(),
            interests: std::sync::Mutex::new(HashMap::new()),
        };
        // A named backbone topic's settings apply when the node follows it.
        for name in config
            .topics
            .iter()
            .filter_map(|t| t.name.as_deref())
            .filter(|name| !registry.is_backbone(name))
        {
            let settings = registry.settings_for(name);
            registry.create(name, settings)?;
        }
        Ok(registry)
    }

    /// The settings a topic of this name gets when auto-created.
    pub fn settings_for(&self, name: &str) -> TopicSettings {
        let exact = self
            .overrides
            .iter()
            .find(|o| o.name.as_deref() == Some(name));
        let by_prefix = || {
            self.overrides
                .iter()
                .filter(|o| o.prefix.as_deref().is_some_and(|p| name.starts_with(p)))
                .max_by_key(|o| o.prefix.as_ref().map_or(0, String::len))
        };
        match exact.or_else(by_prefix) {
            Some(o) => TopicSettings {
                ring_bytes: o.ring_bytes.unwrap_or(self.defaults.ring_bytes),
                max_message_bytes: o
                    .max_message_bytes
                    .unwrap_or(self.defaults.max_message_bytes),
            },
            None => self.defaults,
        }
    }

    /// A wildcard subscription to `pattern` begins: topics it matches are
    /// wanted on this node until the matching [`Registry::lose_interest`].
    pub fn add_interest(&self, pattern: &Pattern) {
        let mut interests = self.interests.lock().unwrap_or_else(|p| p.into_inner());
        interests
            .entry(pattern.as_str().into())
            .or_insert_with(|| (pattern.clone(), 0))
            .1 += 1;
    }

    /// A wildcard subscription to `pattern` ended.
    pub fn lose_interest(&self, pattern: &Pattern) {
        let mut interests = self.interests.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = interests.get_mut(pattern.as_str()) {
            *n -= 1;
            if *n == 0 {
                interests.remove(pattern.as_str());
            }
        }
    }

    /// Whether a live wildcard subscription matches `topic`.
    pub fn wanted(&self, topic: &str) -> bool {
        let interests = self.interests.lock().unwrap_or_else(|p| p.into_inner());
        interests.values().any(|(p, _)| p.matches(topic))
    }

    /// The patterns of the live wildcard subscriptions.
    pub fn interests(&self) -> Vec<Pattern> {
        let interests = self.interests.lock().unwrap_or_else(|p| p.into_inner());
        interests.values().map(|(p, _)| p.clone()).collect()
    }

    /// Backbone topics this node follows now.
    pub fn backbone_topics(&self) -> usize {
        self.read().values().filter(|t| t.is_backbone()).count()
    }

    /// `limits.max_topics`.
    pub fn max_topics(&self) -> usize {
        self.max_topics
    }

    /// Whether `name` is served through the backbone (cluster mode).
    pub fn is_backbone(&self, name: &str) -> bool {
        self.backbone.iter().any(|p| p.matches(name))
    }

    /// Whether any topic `pattern` matches may be served through the
    /// backbone.
    pub fn overlaps_backbone(&self, pattern: &Pattern) -> bool {
        self.backbone.iter().any(|p| p.overlaps(pattern))
    }

    /// The topic, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().get(name).cloned()
    }

    /// The topic, created with its configured settings if it does not exist
    /// and auto-creation is on, without a per-connection quota.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Topic>, RegistryError> {
        self.get_or_create_within(name, None)
    }

    /// The topic, created with its configured settings if it does not exist
    /// and auto-creation is on; a creation counts against `quota`. This is
    /// the path of every publish and subscribe.
    pub fn get_or_create_within(
        &self,
        name: &str,
        quota: Option<&CreationQuota>,
    ) -> Result<Arc<Topic>, RegistryError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        validate_topic(name)?;
        if self.is_backbone(name) {
            return Err(RegistryError::NotReady(name.to_owned()));
        }
        if !self.auto_create {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        let settings = self.settings_for(name);
        let mut topics = self.write();
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        self.check_room(&topics)?;
        if let Some(q) = quota {
            q.take()?;
        }
        self.insert(&mut topics, name, settings, true)
    }

    /// The backbone topic `name` in `epoch`, its ring's seq 0 being topic
    /// seq `base`: the one this node follows already if it is in that
    /// epoch, or a new one (replacing, and ending, one of an older epoch);
    /// `true` when it is new, and its caller must start its feed. A
    /// creation counts against `quota` like any other.
    pub fn get_or_create_backbone(
        &self,
        name: &str,
        quota: Option<&CreationQuota>,
        epoch: u64,
        base: u64,
        history: Arc<dyn History>,
    ) -> Result<(Arc<Topic>, bool), RegistryError> {
        validate_topic(name)?;
        let settings = self.settings_for(name);
        let mut topics = self.write();
        match topics.get(name) {
            Some(t) if t.epoch() == epoch && !t.is_deleted() => return Ok((t.clone(), false)),
            Some(_) => {
                if let Some(old) = topics.remove(name) {
                    old.mark_deleted();
                }
            }
            None => {}
        }
        self.check_room(&topics)?;
        if let Some(q) = quota {
            q.take()?;
        }
        let name: Arc<str> = name.into();
        let topic = Arc::new(Topic::from_backbone(
            name.clone(),
            settings,
            self.memory.clone(),
            epoch,
            base,
            history,
        ));
        topics.insert(name.clone(), topic.clone());
        let _ = self.created.send(name);
        Ok((topic, true))
    }

    /// Removes `topic` if it is still the one registered under its name
    /// (a feed whose backbone stream went away); its subscriptions end.
    pub fn remove_if_current(&self, topic: &Arc<Topic>) {
        let mut topics = self.write();
        if topics
            .get(topic.name())
            .is_some_and(|t| Arc::ptr_eq(t, topic))
        {
            topics.remove(topic.name());
        }
        topic.mark_deleted();
    }

    /// Creates a topic with explicit settings (admin API).
    pub fn create(&self, name: &str, settings: TopicSettings) -> Result<Arc<Topic>, RegistryError> {
        validate_topic(name)?;
        if self.is_backbone(name) {
            return Err(RegistryError::InvalidSettings(format!(
                "`{name}` is served through the backbone (backbone.topics): its stream is created on first use"
            )));
        }
        if settings.max_message_bytes == 0 || settings.max_message_bytes > self.max_message_bytes {
            return Err(RegistryError::InvalidSettings(format!(
                "max_message_bytes {} is outside 1..={}",
                settings.max_message_bytes, self.max_message_bytes
            )));
        }
        check_ring_config(settings.ring_bytes, settings.max_message_bytes)
            .map_err(|e| RegistryError::InvalidSettings(e.to_string()))?;
        let mut topics = self.write();
        if topics.contains_key(name) {
            return Err(RegistryError::AlreadyExists(name.to_owned()));
        }
        self.check_room(&topics)?;
        self.insert(&mut topics, name, settings, false)
    }

    fn check_room(&self, topics: &HashMap<Arc<str>, Arc<Topic>>) -> Result<(), RegistryError> {
        if topics.len() >= self.max_topics {
            return Err(Exhausted::Topics {
                limit: self.max_topics,
            }
            .into());
        }
        Ok(())
    }

    fn insert(
        &self,
        topics: &mut HashMap<Arc<str>, Arc<Topic>>,
        name: &str,
        settings: TopicSettings,
        auto_created: bool,
    ) -> Result<Arc<Topic>, RegistryError> {
        let name: Arc<str> = name.into();
        let topic = Arc::new(Topic::in_budget(
            name.clone(),
            settings,
            self.memory.clone(),
            auto_created,
        ));
        topics.insert(name.clone(), topic.clone());
        // Nobody listening is fine: no wildcard subscription is live.
        let _ = self.created.send(name);
        Ok(topic)
    }

    /// The names of topics created from now on. A receiver that falls
    /// more than a thousand creations behind gets `Lagged` and must look
    /// at [`Registry::matching`] again. Names, not topics: a slow receiver
    /// must not keep a deleted topic's ring alive.
    pub fn watch_created(&self) -> broadcast::Receiver<Arc<str>> {
        self.created.subscribe()
    }

    /// Every topic whose name `pattern` matches (unordered).
    pub fn matching(&self, pattern: &Pattern) -> Vec<Arc<Topic>> {
        self.read()
            .iter()
            .filter(|(name, _)| pattern.matches(name))
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Removes auto-created topics that had no subscriber and no publish
    /// for `ttl`, as seen by this and earlier calls; returns them (the
    /// caller retires their counters). Called periodically by the server.
    ///
    /// A topic is looked at under the read lock first, so a scan of many
    /// busy topics never blocks publishers looking names up; only the
    /// idle ones are removed under the write lock, each re-checked there
    /// (a subscriber or publish that arrived in between keeps it).
    pub fn reap_idle(&self, ttl: std::time::Duration) -> Vec<Arc<Topic>> {
        let now = now_unix_nanos();
        let cutoff = now.saturating_sub(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        let idle: Vec<Arc<str>> = self
            .read()
            .iter()
            .filter(|(_, t)| t.idle_before(now, cutoff))
            .map(|(name, _)| name.clone())
            .collect();
        if idle.is_empty() {
            return Vec::new();
        }
        let mut topics = self.write();
        let mut reaped = Vec::new();
        for name in idle {
            let still_idle = topics
                .get(&name)
                .is_some_and(|t| t.idle_before(now, cutoff));
            if let Some(t) = still_idle.then(|| topics.remove(&name)).flatten() {
                t.mark_deleted();
                reaped.push(t);
            }
        }
        self.reaped
            .fetch_add(reaped.len() as u64, Ordering::Relaxed);
        reaped
    }

    /// Topics reaped so far.
    pub fn reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    /// The ring-memory budget every topic's ring is reserved from.
    pub fn ring_memory(&self) -> &Arc<Budget> {
        &self.memory
    }

    /// Sum of every topic's (published messages, published bytes), read
    /// without sorting or copying names: `/metrics` calls it per scrape.
    pub fn published_totals(&self) -> (u64, u64) {
        self.read().values().fold((0, 0), |(n, b), t| {
            let c = &t.counters;
            (
                n + c.published.load(Ordering::Relaxed),
                b + c.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// Deletes a topic: its subscriptions end, and a later use of the name
    /// creates a new topic with a new epoch.
    pub fn delete(&self, name: &str) -> Result<(), RegistryError> {
        let topic = self
            .write()
            .remove(name)
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
        topic.mark_deleted();
        Ok(())
    }

    /// Names of all topics, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().map(|k| k.to_string()).collect();
        names.sort_unstable();
        names
    }

    /// Stats of one topic.
    pub fn stats(&self, name: &str) -> Option<TopicStats> {
        self.get(name).map(|t| t.stats())
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether there are no topics.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Topic>>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (single inserts/removes), so a poisoned lock is still usable.
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicOverride;

    fn config() -> Config {
        let mut c = Config::for_tests(std::path::Path::new("/tmp/unused"));
        c.topics = vec![
            TopicOverride {
                prefix: Some("metrics.".into()),
                ring_bytes: Some(16 * 1024),
                max_message_bytes: Some(1024),
                ..Default::default()
            },
            TopicOverride {
                prefix: Some("metrics.cpu".into()),
                ring_bytes: Some(32 * 1024),
                max_message_bytes: Some(2048),
                ..Default::default()
            },
            TopicOverride {
                name: Some("orders".into()),
                ring_bytes: Some(8 * 1024),
                max_message_bytes: Some(512),
                ..Default::default()
            },
        ];
        c.validate().unwrap();
        c
    }

    #[test]
    fn backbone_names_are_never_local_topics() {
        let mut c = config();
        c.backbone.url = "nats://127.0.0.1:4222".into();
        c.backbone.topics = vec!["c.>".into(), "orders".into()];
        let r = Registry::from_config(&c).unwrap();
        // The named backbone topic is not created at start; its settings
        // still apply when the node follows it.
        assert_eq!(r.list(), Vec::<String>::new());
        assert!(matches!(
            r.get_or_create("c.x"),
            Err(RegistryError::NotReady(_))
        ));
        assert!(matches!(
            r.create("c.y", r.settings_for("c.y")),
            Err(RegistryError::InvalidSettings(_))
        ));
        assert!(r.get_or_create("local.x").is_ok());
        assert!(r.overlaps_backbone(&Pattern::parse("c.*").unwrap()));
        assert!(!r.overlaps_backbone(&Pattern::parse("local.*").unwrap()));
    }

    #[test]
    fn wildcard_interests_are_counted_per_pattern() {
        let r = Registry::from_config(&config()).unwrap();
        let p = Pattern::parse("prices.*").unwrap();
        r.add_interest(&p);
        r.add_interest(&p);
        assert!(r.wanted("prices.eur"));
        assert!(!r.wanted("orders"));
        r.lose_interest(&p);
        assert!(r.wanted("prices.eur"), "one subscription still holds it");
        r.lose_interest(&p);
        assert!(!r.wanted("prices.eur"));
        assert!(r.interests().is_empty());
    }

    #[test]
    fn topics_are_created_on_first_use_once() {
        let r = Registry::from_config(&config()).unwrap();
        let a = r.get_or_create("a.b").unwrap();
        let b = r.get_or_create("a.b").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(r.list(), vec!["a.b", "orders"]);
    }

    #[test]
    fn overrides_match_exact_name_then_longest_prefix() {
        let c = config();
        let r = Registry::from_config(&c).unwrap();
        let d = r.settings_for("other");
        assert_eq!(d.ring_bytes, c.topic_defaults.ring_bytes);
        assert_eq!(d.max_message_bytes, c.limits.max_message_bytes);
        let m = r.settings_for("metrics.mem");
        assert_eq!((m.ring_bytes, m.max_message_bytes), (16 * 1024, 1024));
        let cpu = r.settings_for("metrics.cpu.0");
        assert_eq!(cpu.ring_bytes, 32 * 1024);
        let o = r.get("orders").expect("named override created at start");
        assert_eq!(o.settings().max_message_bytes, 512);
    }

    #[test]
    fn invalid_names_are_refused_before_creation() {
        let r = Registry::from_config(&config()).unwrap();
        assert!(matches!(
            r.get_or_create("bad..name"),
            Err(RegistryError::InvalidName(_))
        ));
        assert!(matches!(
            r.get_or_create("has space"),
            Err(RegistryError::InvalidName(_))
        ));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn explicit_create_delete_and_stats() {
        let r = Registry::from_config(&config()).unwrap();
        let s = TopicSettings {
            ring_bytes: 8 * 1024,
            max_message_bytes: 100,
        };
        let t = r.create("x", s).unwrap();
        assert!(matches!(
            r.create("x", s),
            Err(RegistryError::AlreadyExists(_))
        ));
        t.publish(b"hi").unwrap();
        let st = r.stats("x").unwrap();
        assert_eq!((st.published, st.bytes, st.ring_bytes), (1, 2, 8 * 1024));
        let old_epoch = t.epoch();
        r.delete("x").unwrap();
        assert!(t.is_deleted());
        assert!(r.stats("x").is_none());
        assert!(matches!(r.delete("x"), Err(RegistryError::NotFound(_))));
        let again = r.get_or_create("x").unwrap();
        assert_ne!(again.epoch(), old_epoch, "re-created topic has a new epoch");
        let too_small = TopicSettings {
            ring_bytes: 4 * 1024,
            max_message_bytes: 60_000,
        };
        assert!(matches!(
            r.create("y", too_small),
            Err(RegistryError::InvalidSettings(_))
        ));
    }

    #[test]
    fn auto_create_off_and_topic_cap() {
        let mut c = config();
        c.topic_defaults.auto_create = false;
        let r = Registry::from_config(&c).unwrap();
        assert!(matches!(
            r.get_or_create("nope"),
            Err(RegistryError::NotFound(_))
        ));
        assert!(r.get_or_create("orders").is_ok());

        let mut c = config();
        c.limits.max_topics = 2;
        let r = Registry::from_config(&c).unwrap();
        r.get_or_create("a").unwrap();
        assert!(matches!(
            r.get_or_create("b"),
            Err(RegistryError::Exhausted(Exhausted::Topics { limit: 2 }))
        ));
    }

    #[test]
    fn a_connection_creates_at_most_its_quota() {
        let r = Registry::from_config(&config()).unwrap();
        let quota = CreationQuota::new(2);
        r.get_or_create_within("a", Some(&quota)).unwrap();
        r.get_or_create_within("b", Some(&quota)).unwrap();
        r.get_or_create_within("a", Some(&quota))
            .expect("an existing topic costs nothing");
        assert!(matches!(
            r.get_or_create_within("c", Some(&quota)),
            Err(RegistryError::Exhausted(Exhausted::TopicQuota { limit: 2 }))
        ));
        r.get_or_create("c").expect("another connection's quota");
    }

    #[test]
    fn idle_auto_created_topics_are_reaped() {
        let r = Registry::from_config(&config()).unwrap();
        let idle = r.get_or_create("idle").unwrap();
        let busy = r.get_or_create("busy").unwrap();
        assert!(r.reap_idle(std::time::Duration::from_secs(3600)).is_empty());
        busy.publish(b"x").unwrap();
        let reaped = r.reap_idle(std::time::Duration::ZERO);
        let names: Vec<&str> = reaped.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["idle"], "`busy` published since the last look");
        assert!(idle.is_deleted());
        assert!(r.get("orders").is_some(), "configured topics stay");
        assert_eq!(r.reaped(), 1);
        let reaped = r.reap_idle(std::time::Duration::ZERO);
        assert_eq!(reaped.len(), 1, "`busy` is idle now");
        assert_eq!(r.list(), ["orders"]);
    }
}
