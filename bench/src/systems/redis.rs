//! Redis pub/sub through the redis crate (tokio). Publishing pipelines each
//! batch (one round trip per batch, as `redis-benchmark -P` does);
//! subscribing uses a dedicated pub/sub connection per subscriber.

use bytes::Bytes;
use futures::StreamExt;

use super::{BoxFut, Event, Publisher, SideChannel, Subscription, System, SystemInfo};
use std::sync::Arc;

/// A running redis-server.
#[derive(Debug, Clone)]
pub struct Redis {
    /// `host:port`.
    pub addr: String,
    /// Server pid.
    pub pid: Option<u32>,
}

impl Redis {
    fn client(&self) -> anyhow::Result<redis::Client> {
        Ok(redis::Client::open(format!("redis://{}/", self.addr))?)
    }
}

impl System for Redis {
    fn info(&self) -> SystemInfo {
        SystemInfo {
            id: "redis".into(),
            transport: "TCP, plaintext".into(),
            tls: false,
            client: "redis-rs 1.x (tokio)".into(),
        }
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFut<'a, anyhow::Result<Subscription>> {
        Box::pin(async move {
            let mut pubsub = self.client()?.get_async_pubsub().await?;
            // Returns after the server's subscribe confirmation.
            pubsub.subscribe(topic).await?;
            let side = Arc::new(SideChannel::default());
            let events = pubsub
                .into_on_message()
                .map(|m| Event::Message(Bytes::copy_from_slice(m.get_payload_bytes())))
                .chain(futures::stream::once(async {
                    Event::Closed("connection closed by server".into())
                }));
            Ok(Subscription {
                events: Box::pin(events),
                side,
            })
        })
    }

    fn publisher(&self) -> BoxFut<'_, anyhow::Result<Box<dyn Publisher>>> {
        Box::pin(async move {
            // No response timeout: under load a 64-command pipeline to a
            // server fanning out to 1000 subscribers can take longer than
            // the crate's 500 ms default, and that is a result, not an error.
            let config = redis::AsyncConnectionConfig::new()
                .set_response_timeout(None)
                .set_connection_timeout(Some(std::time::Duration::from_secs(10)));
            let conn = self
                .client()?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok(Box::new(RedisPublisher { conn }) as Box<dyn Publisher>)
        })
    }

    fn server_pid(&self) -> Option<u32> {
        self.pid
    }
}

struct RedisPublisher {
    conn: redis::aio::MultiplexedConnection,
}

impl std::fmt::Debug for RedisPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPublisher").finish_non_exhaustive()
    }
}

impl Publisher for RedisPublisher {
    fn publish_batch<'a>(
        &'a mut self,
        topic: &'a str,
        payloads: &'a [Bytes],
    ) -> BoxFut<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for p in payloads {
                pipe.cmd("PUBLISH").arg(topic).arg(p.as_ref()).ignore();
            }
            let () = pipe.query_async(&mut self.conn).await?;
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFut<'_, anyhow::Result<()>> {
        // Every batch waited for its replies: nothing is left in the client.
        Box::pin(async { Ok(()) })
    }
}
