//! Lapwing over QUIC through lapwing-client. Always encrypted (TLS 1.3 in
//! QUIC); the generator trusts the server's self-signed certificate file.

use std::path::PathBuf;

use bytes::Bytes;
use futures::StreamExt;
use lapwing_client::{BufferOverflow, Client, ClientConfig, SubscribeOptions, Trust};

use super::{BoxFut, Event, Publisher, SideChannel, Subscription, System, SystemInfo};
use std::sync::Arc;

/// A running lapwing-server.
#[derive(Debug, Clone)]
pub struct Lapwing {
    /// QUIC `host:port`.
    pub addr: String,
    /// The server's certificate (PEM) to trust.
    pub ca: PathBuf,
    /// Server pid.
    pub pid: Option<u32>,
    /// What a subscriber's full buffer does.
    pub overflow: BufferOverflow,
}

impl Lapwing {
    async fn connect(&self) -> anyhow::Result<Client> {
        let mut cfg = ClientConfig::new(self.addr.clone(), Trust::CaFile(self.ca.clone()));
        cfg.client_name = "lapwing-bench".into();
        cfg.buffer_overflow = self.overflow;
        Ok(Client::connect(cfg).await?)
    }
}

impl System for Lapwing {
    fn info(&self) -> SystemInfo {
        SystemInfo {
            id: "lapwing-quic".into(),
            transport: "QUIC (TLS 1.3, always encrypted)".into(),
            tls: true,
            client: "lapwing-client (this repo)".into(),
        }
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFut<'a, anyhow::Result<Subscription>> {
        Box::pin(async move {
            let client = self.connect().await?;
            // Default options: start at the latest message, lag policy
            // resume-oldest (a lapped subscriber gets a Resync).
            let sub = client.subscribe(topic, SubscribeOptions::default()).await?;
            let events = sub
                .map(|e| match e {
                    Ok(lapwing_client::Event::Message { payload, .. }) => Event::Message(payload),
                    Ok(lapwing_client::Event::Resync { missed, .. }) => Event::Resync { missed },
                    // Only wildcard subscriptions join and leave; the bench
                    // uses one topic.
                    Ok(
                        e @ (lapwing_client::Event::Joined { .. }
                        | lapwing_client::Event::Left { .. }),
                    ) => Event::Closed(format!("unexpected {e:?} on one topic")),
                    Err(e) => Event::Closed(format!("{e}")),
                })
                .chain(futures::stream::once(async move {
                    // Keeps the connection alive as long as the stream.
                    drop(client);
                    Event::Closed("subscription ended".into())
                }));
            Ok(Subscription {
                events: Box::pin(events),
                side: Arc::new(SideChannel::default()),
            })
        })
    }

    fn publisher(&self) -> BoxFut<'_, anyhow::Result<Box<dyn Publisher>>> {
        Box::pin(async move {
            let client = self.connect().await?;
            let publisher = client.publisher();
            Ok(Box::new(LapwingPublisher {
                publisher,
                _client: client,
            }) as Box<dyn Publisher>)
        })
    }

    fn server_pid(&self) -> Option<u32> {
        self.pid
    }
}

#[derive(Debug)]
struct LapwingPublisher {
    publisher: lapwing_client::Publisher,
    _client: Client,
}

impl Publisher for LapwingPublisher {
    fn publish_batch<'a>(
        &'a mut self,
        topic: &'a str,
        payloads: &'a [Bytes],
    ) -> BoxFut<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for p in payloads {
                // Queued to the publisher task, which writes batches.
                self.publisher.publish(topic, p.clone()).await?;
            }
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFut<'_, anyhow::Result<()>> {
        Box::pin(async move { Ok(self.publisher.flush().await?) })
    }
}
