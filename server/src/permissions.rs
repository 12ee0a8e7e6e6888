//! Principals and what each may do: publish and subscribe rules on topic
//! patterns, and whether it may call the Admin API.
//!
//! Rules follow NATS: a principal has `allow` and `deny` pattern lists per
//! action, deny wins, and once any principal is configured what is not
//! allowed is denied. A literal topic is allowed when an allow pattern
//! matches it and no deny pattern does. A wildcard target (a subscription
//! to `prices.*`) needs its own grant: an allow pattern that *covers* it
//! and no deny pattern that *overlaps* it, so a wildcard can never reach a
//! topic the principal could not subscribe to by name.
//!
//! `{name}` in a pattern expands to the principal's name when the config is
//! loaded (`inbox.{name}.>`).
//!
//! Servers without principals keep working as before: every configured
//! token (`auth.tokens`), or everyone when there are none, is a principal
//! with every permission.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lapwing_proto::pattern::{Pattern, PatternError};

use crate::auth::Directory;
use crate::error::RequestError;

/// What a principal wants to do to a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish to it.
    Publish,
    /// Subscribe to it (or resume a subscription to it).
    Subscribe,
}

impl Action {
    /// Both, in the order metrics list them.
    pub const ALL: [Action; 2] = [Action::Publish, Action::Subscribe];

    /// `"publish"` or `"subscribe"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }
}

/// Allow and deny patterns for one action.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl Rules {
    /// Rules from pattern texts, `{name}` expanded to `principal`.
    pub fn parse(
        allow: &[String],
        deny: &[String],
        principal: &str,
    ) -> Result<Rules, PatternError> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|p| Pattern::parse(&p.replace("{name}", principal)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Rules {
            allow: parse(allow)?,
            deny: parse(deny)?,
        })
    }

    /// Everything allowed.
    pub fn everything() -> Rules {
        Rules {
            allow: vec![Pattern::parse(">").expect("`>` is a pattern")],
            deny: Vec::new(),
        }
    }

    /// The rule that decides `target`: `Ok(allow rule)` or `Err(why not)`.
    pub fn decide(&self, target: &Pattern) -> Result<&Pattern, Verdict<'_>> {
        let literal = target.is_literal();
        let denied = self.deny.iter().find(|d| {
            if literal {
                d.matches(target.as_str())
            } else {
                d.overlaps(target)
            }
        });
        if let Some(d) = denied {
            return Err(Verdict::Denied(d));
        }
        self.allow
            .iter()
            .find(|a| {
                if literal {
                    a.matches(target.as_str())
                } else {
                    a.covers(target)
                }
            })
            .ok_or(Verdict::NotAllowed)
    }
}

/// Why a target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// This deny rule matches (or overlaps) it.
    Denied(&'a Pattern),
    /// No allow rule matches (or covers) it.
    NotAllowed,
}

/// Who a client is, and what it may do.
#[derive(Debug, Clone)]
pub struct Principal {
    name: String,
    publish: Rules,
    subscribe: Rules,
    admin: bool,
}

impl Principal {
    /// A principal with these rules.
    pub fn new(
        name: impl Into<String>,
        publish: Rules,
        subscribe: Rules,
        admin: bool,
    ) -> Principal {
        Principal {
            name: name.into(),
            publish,
            subscribe,
            admin,
        }
    }

    /// A principal that may publish and subscribe anywhere (a legacy token,
    /// or everyone on a server without tokens). Not admin.
    pub fn everything(name: impl Into<String>) -> Principal {
        Principal::new(name, Rules::everything(), Rules::everything(), false)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it may call the Admin API.
    pub fn is_admin(&self) -> bool {
        self.admin
    }

    /// The rules of one action.
    pub fn rules(&self, action: Action) -> &Rules {
        match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
        }
    }

    /// One line saying which rule decides `action` on `target`
    /// (`lapwing auth check`, logs).
    pub fn explain(&self, action: Action, target: &Pattern) -> String {
        let (who, what) = (&self.name, action.as_str());
        match self.rules(action).decide(target) {
            Ok(rule) => format!("allowed: principal `{who}` may {what} `{target}` (allow rule `{rule}`)"),
            Err(Verdict::Denied(rule)) => {
                format!("denied: principal `{who}` may not {what} `{target}` (deny rule `{rule}`)")
            }
            Err(Verdict::NotAllowed) if target.is_literal() => format!(
                "denied: principal `{who}` may not {what} `{target}` (no allow rule matches it)"
            ),
            Err(Verdict::NotAllowed) => format!(
                "denied: principal `{who}` may not {what} `{target}` (no allow rule covers the whole pattern)"
            ),
        }
    }
}

/// Denials counted per action, for `lapwing_permission_denied_total`.
#[derive(Debug, Default)]
pub struct Denials {
    counts: [AtomicU64; 3],
}

impl Denials {
    /// Denials of `action` so far.
    pub fn of(&self, action: Action) -> u64 {
        self.counts[action as usize].load(Ordering::Relaxed)
    }

    /// Admin calls refused to a principal without the admin permission.
    pub fn admin(&self) -> u64 {
        self.counts[2].load(Ordering::Relaxed)
    }

    /// Counts one refused Admin call.
    pub fn count_admin(&self) {
        self.counts[2].fetch_add(1, Ordering::Relaxed);
    }
}

/// A principal's checks, counted: what the session layer holds per client.
///
/// It follows reloads of `[[principals]]`: after one, each check looks the
/// principal up again by name in the directory in force, so a withdrawn
/// permission is withdrawn for connections and streams already open (a
/// principal that no longer exists may do nothing).
#[derive(Debug, Clone)]
pub struct Guard {
    principal: Arc<Principal>,
    /// The directory generation `principal` was looked up in.
    generation: u64,
    directory: Option<Arc<Directory>>,
    denials: Arc<Denials>,
}

impl Guard {
    /// Checks for `principal`, counting denials in `denials`; it never
    /// changes (tests, and principals outside a directory).
    pub fn new(principal: Arc<Principal>, denials: Arc<Denials>) -> Guard {
        Guard {
            principal,
            generation: 0,
            directory: None,
            denials,
        }
    }

    /// Checks for `principal` as found in `directory` now.
    pub fn in_directory(
        principal: Arc<Principal>,
        directory: Arc<Directory>,
        denials: Arc<Denials>,
    ) -> Guard {
        Guard {
            generation: directory.generation(),
            principal,
            directory: Some(directory),
            denials,
        }
    }

    /// The principal, as looked up when this guard was made.
    pub fn principal(&self) -> &Arc<Principal> {
        &self.principal
    }

    /// The principal in force: the one this guard holds, or after a
    /// reload the one of the same name (`None` if it was removed).
    fn current(&self) -> Option<Arc<Principal>> {
        match &self.directory {
            Some(d) if d.generation() != self.generation => {
                d.current().principal(&self.principal.name)
            }
            _ => Some(self.principal.clone()),
        }
    }

    /// Whether the principal may `action` on `topic` (a valid topic name or
    /// pattern); a typed PERMISSION_DENIED naming both if not.
    pub fn check(&self, action: Action, topic: &str) -> Result<(), RequestError> {
        let target = Pattern::parse(topic).map_err(RequestError::from)?;
        let allowed = self
            .current()
            .is_some_and(|p| p.rules(action).decide(&target).is_ok());
        if allowed {
            return Ok(());
        }
        self.denials.counts[action as usize].fetch_add(1, Ordering::Relaxed);
        Err(RequestError::Forbidden {
            principal: self.principal.name.clone(),
            action: action.as_str(),
            topic: topic.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Rules::parse(&v(allow), &v(deny), "ticker").unwrap()
    }

    fn guard(publish: Rules, subscribe: Rules) -> (Guard, Arc<Denials>) {
        let denials = Arc::new(Denials::default());
        let p = Arc::new(Principal::new("ticker", publish, subscribe, false));
        (Guard::new(p, denials.clone()), denials)
    }

    #[test]
    fn allow_deny_and_deny_wins() {
        let (g, denials) = guard(
            rules(&["prices.>"], &[]),
            rules(&["prices.*", "inbox.{name}.>"], &["prices.internal"]),
        );
        assert!(g.check(Action::Publish, "prices.eur").is_ok());
        assert!(g.check(Action::Publish, "orders.eur").is_err());
        assert!(g.check(Action::Subscribe, "prices.eur").is_ok());
        let e = g.check(Action::Subscribe, "prices.internal").unwrap_err();
        assert_eq!(e.code(), lapwing_proto::v1::ErrorCode::PermissionDenied);
        let msg = e.to_string();
        assert!(
            msg.contains("subscribe") && msg.contains("prices.internal") && msg.contains("ticker"),
            "{msg}"
        );
        assert!(
            g.check(Action::Subscribe, "inbox.ticker.replies").is_ok(),
            "{{name}} expands"
        );
        assert!(g.check(Action::Subscribe, "inbox.other.replies").is_err());
        assert_eq!(
            (denials.of(Action::Publish), denials.of(Action::Subscribe)),
            (1, 2)
        );
    }

    #[test]
    fn a_wildcard_needs_its_own_grant() {
        let (g, _) = guard(
            rules(&[], &[]),
            rules(&["prices.eur", "fx.>"], &["fx.internal.>"]),
        );
        assert!(g.check(Action::Subscribe, "prices.eur").is_ok());
        assert!(
            g.check(Action::Subscribe, "prices.*").is_err(),
            "only prices.eur is granted"
        );
        assert!(g.check(Action::Subscribe, "fx.*").is_ok());
        assert!(
            g.check(Action::Subscribe, "fx.>").is_err(),
            "overlaps the deny rule fx.internal.>"
        );
        let p = g.principal();
        let pat = |s| Pattern::parse(s).unwrap();
        assert!(p
            .explain(Action::Subscribe, &pat("fx.>"))
            .contains("deny rule `fx.internal.>`"));
        assert!(p
            .explain(Action::Subscribe, &pat("fx.eur"))
            .contains("allow rule `fx.>`"));
        assert!(p
            .explain(Action::Subscribe, &pat("prices.*"))
            .contains("covers"));
    }

    #[test]
    fn everything_allows_everything_but_admin() {
        let p = Principal::everything("token");
        let (g, _) = guard(Rules::everything(), Rules::everything());
        assert!(g.check(Action::Publish, "a.b").is_ok());
        assert!(g.check(Action::Subscribe, "a.>").is_ok());
        assert!(!p.is_admin());
    }
}
