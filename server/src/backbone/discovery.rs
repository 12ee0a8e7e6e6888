//! Backbone topics created on other nodes, found for this node's wildcard
//! subscriptions.
//!
//! A wildcard subscription's pattern is registered with the registry for
//! as long as it lives ([`Registry::wanted`](crate::registry::Registry::wanted)).
//! JetStream announces every stream it creates on
//! `$JS.EVENT.ADVISORY.STREAM.CREATED.<stream>`; for each of ours whose
//! topic a live pattern matches, this node starts following the topic
//! ([`Backbone::prepare`]), which puts it in the registry, whose creation
//! feed makes every matching wildcard subscription join it from its seq 0
//! (replayed from the backbone up to where the node's ring begins). After
//! a reconnection, when announcements may have been missed, every live
//! pattern is looked up again.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::debug;

use super::Backbone;

/// The advisory subject of every stream JetStream creates.
const STREAM_CREATED: &str = "$JS.EVENT.ADVISORY.STREAM.CREATED.*";

/// Runs until the server stops.
pub(super) async fn run(backbone: Arc<Backbone>) {
    let mut connected = backbone.connected.clone();
    loop {
        let mut created = match backbone.client.subscribe(STREAM_CREATED).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "cannot watch stream creations yet");
                tokio::select! {
                    _ = backbone.stop.cancelled() => return,
                    _ = connected.changed() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                _ = backbone.stop.cancelled() => return,
                message = created.next() => {
                    let Some(message) = message else { break };
                    let Some(name) = message.subject.as_str().rsplit('.').next() else { continue };
                    let Some(topic) = backbone.topic_of_stream(name).await else { continue };
                    if backbone.registry.is_backbone(&topic) && backbone.registry.wanted(&topic) {
                        let b = backbone.clone();
                        tokio::spawn(async move {
                            if let Err(e) = b.prepare(&topic, None).await {
                                debug!(%topic, error = %e, "cannot follow a new backbone topic");
                            }
                        });
                    }
                }
                _ = connected.changed() => {
                    for pattern in backbone.registry.interests() {
                        let b = backbone.clone();
                        tokio::spawn(async move {
                            if let Err(e) = b.prepare_pattern(&pattern, u32::MAX).await {
                                debug!(pattern = pattern.as_str(), error = %e, "cannot look up backbone topics again");
                            }
                        });
                    }
                }
            }
        }
    }
}
