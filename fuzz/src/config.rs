//! Target `config`: [`Config::from_toml`] and [`Config::validate`] on
//! arbitrary text.
//!
//! An operator's config file is untrusted in the sense that matters here:
//! whatever it says, the server must answer with an error message, not a
//! panic. Checked: parsing and validation never panic; a rejected config
//! gets at least one error, each on its own line; neither the errors nor
//! the `Debug` form ever depend on a token's value (they would leak it to
//! logs); and a config `validate` accepts keeps every documented rule
//! (checked here independently of `validate`), and its principals and
//! topics load as they do at start.

use lapwing_server::config::{AuthConfig, Config, PrincipalConfig, HARD_MAX_MESSAGE_BYTES};

/// Runs one input: UTF-8 text (other inputs are skipped).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml(text) {
        Ok(config) => config,
        Err(err) => {
            assert!(!err.to_string().is_empty(), "parse error without a message");
            return;
        }
    };
    assert_eq!(
        format!("{:?}", config.auth),
        format!("{:?}", redacted(&config.auth)),
        "Debug of [auth] depends on the tokens' values"
    );
    assert_eq!(
        format!("{:?}", config.principals),
        format!("{:?}", redacted_principals(&config.principals)),
        "Debug of [[principals]] depends on the tokens' values"
    );
    match config.validate() {
        Ok(()) => check_valid(&config),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "validate failed with no error");
            let message = errors.to_string();
            assert_eq!(
                message.lines().count(),
                errors.0.len() + 1,
                "each error is one line under a heading: {message}"
            );
            let mut other = config.clone();
            other.auth = redacted(&config.auth);
            other.principals = redacted_principals(&config.principals);
            let other = other.validate().expect_err("only the token values changed");
            assert_eq!(
                message,
                other.to_string(),
                "validation errors depend on the tokens' values"
            );
        }
    }
}

fn replace(token: &str) -> String {
    if token.is_empty() {
        String::new()
    } else {
        "x".to_owned()
    }
}

/// The same `[auth]` with every non-empty token replaced by one fixed value.
fn redacted(auth: &AuthConfig) -> AuthConfig {
    AuthConfig {
        tokens: auth.tokens.iter().map(|t| replace(t)).collect(),
        admin_token: auth.admin_token.as_deref().map(replace),
        principals_file: auth.principals_file.clone(),
    }
}

/// The same principals with every non-empty clear token replaced.
fn redacted_principals(principals: &[PrincipalConfig]) -> Vec<PrincipalConfig> {
    let mut principals = principals.to_vec();
    for p in &mut principals {
        p.token = p.token.as_deref().map(replace);
    }
    principals
}

/// The rules `server/lapwing.example.toml` documents, checked on a config
/// that `validate` accepted.
fn check_valid(config: &Config) {
    let limits = &config.limits;
    let max_message = limits.max_message_bytes;
    assert!((1..=HARD_MAX_MESSAGE_BYTES).contains(&max_message));
    assert!(limits.max_connections >= 1);
    assert!(limits.max_subscriptions_per_connection >= 1);
    assert!(limits.max_topics >= 1);
    assert!(limits.hello_timeout_ms >= 1);
    assert!(limits.handshake_timeout_ms >= 1);
    assert!(limits.frame_timeout_ms >= 1);
    assert!(limits.topics_created_per_connection >= 1);
    assert!(limits.max_publish_streams_per_connection >= 1);
    assert!(limits.ring_memory_bytes >= config.topic_defaults.ring_bytes);
    assert!(limits.partial_frame_bytes >= lapwing_proto::frame_limit_for(max_message));
    assert!(!config.server_name.is_empty());
    assert!(!config.data_dir.as_os_str().is_empty());
    assert_eq!(config.tls.cert.is_some(), config.tls.key.is_some());
    assert!(config.auth.tokens.iter().all(|t| !t.is_empty()));
    assert_ne!(config.auth.admin_token.as_deref(), Some(""));
    assert!(config.shutdown.drain_ms <= 60_000);
    assert!(config.transport.udp_buffer_bytes >= 64 * 1024);
    ring_holds(config.topic_defaults.ring_bytes, max_message);
    for t in &config.topics {
        assert!(
            t.name.is_some() != t.prefix.is_some(),
            "a [[topics]] entry needs exactly one of name and prefix: {t:?}"
        );
        if let Some(name) = &t.name {
            assert!(crate::topic::follows_rules(name), "invalid topic {name:?}");
        }
        if let Some(prefix) = &t.prefix {
            assert!((1..=255).contains(&prefix.len()));
        }
        let message = t.max_message_bytes.unwrap_or(max_message);
        assert!((1..=max_message).contains(&message));
        ring_holds(
            t.ring_bytes.unwrap_or(config.topic_defaults.ring_bytes),
            message,
        );
    }
    let _ = config.hello_timeout();
    // What the server builds from a valid config at start must build.
    if let Err(e) = lapwing_server::auth::Auth::from_config(config) {
        panic!("valid config, but its principals do not load: {e}");
    }
    if let Err(e) = lapwing_server::registry::Registry::from_config(config) {
        panic!("valid config, but its topics do not load: {e}");
    }
}

/// A ring of `ring_bytes` accepted by `validate` can really be built for
/// messages of `max_message_bytes` (checked without allocating it).
fn ring_holds(ring_bytes: usize, max_message_bytes: usize) {
    if let Err(e) = lapwing_server::topic::check_ring_config(ring_bytes, max_message_bytes) {
        panic!("valid config has a ring of {ring_bytes} bytes that cannot hold {max_message_bytes}-byte messages: {e}");
    }
}
