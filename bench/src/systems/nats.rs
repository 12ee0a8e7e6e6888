//! nats-server through async-nats, plaintext or TLS (rustls, a CA file).

use std::path::PathBuf;
use std::sync::Arc;

use async_nats::{ConnectOptions, Event as NatsEvent};
use bytes::Bytes;
use futures::StreamExt;

use super::{BoxFut, Event, Publisher, SideChannel, Subscription, System, SystemInfo};

/// A running nats-server.
#[derive(Debug, Clone)]
pub struct Nats {
    /// `host:port`.
    pub addr: String,
    /// CA (the self-signed cert) to trust: TLS is required when set.
    pub tls_ca: Option<PathBuf>,
    /// Server pid.
    pub pid: Option<u32>,
}

impl Nats {
    async fn connect(&self, side: Arc<SideChannel>) -> anyhow::Result<async_nats::Client> {
        let mut opts = ConnectOptions::new()
            .ignore_discovered_servers()
            .event_callback(move |event| {
                let side = side.clone();
                async move {
                    match event {
                        NatsEvent::Disconnected => SideChannel::bump(&side.disconnects),
                        NatsEvent::SlowConsumer(_) => SideChannel::bump(&side.client_drop_events),
                        NatsEvent::ServerError(_) => SideChannel::bump(&side.server_errors),
                        _ => {}
                    }
                }
            });
        let url = match &self.tls_ca {
            Some(ca) => {
                opts = opts.add_root_certificates(ca.clone()).require_tls(true);
                format!("tls://{}", self.addr)
            }
            None => format!("nats://{}", self.addr),
        };
        Ok(opts.connect(url).await?)
    }
}

impl System for Nats {
    fn info(&self) -> SystemInfo {
        let tls = self.tls_ca.is_some();
        SystemInfo {
            id: if tls { "nats-tls" } else { "nats" }.into(),
            transport: if tls {
                "TCP + TLS 1.3"
            } else {
                "TCP, plaintext"
            }
            .into(),
            tls,
            client: "async-nats 0.46".into(),
        }
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFut<'a, anyhow::Result<Subscription>> {
        Box::pin(async move {
            let side = Arc::new(SideChannel::default());
            let client = self.connect(side.clone()).await?;
            let sub = client.subscribe(topic.to_owned()).await?;
            // PING/PONG: the server has processed SUB once this returns.
            client.flush().await?;
            let events = sub
                .map(|m| Event::Message(m.payload))
                .chain(futures::stream::once(async move {
                    // Keeps the client alive as long as the stream.
                    drop(client);
                    Event::Closed("subscription ended".into())
                }));
            Ok(Subscription {
                events: Box::pin(events),
                side,
            })
        })
    }

    fn publisher(&self) -> BoxFut<'_, anyhow::Result<Box<dyn Publisher>>> {
        Box::pin(async move {
            let client = self.connect(Arc::new(SideChannel::default())).await?;
            Ok(Box::new(NatsPublisher { client }) as Box<dyn Publisher>)
        })
    }

    fn server_pid(&self) -> Option<u32> {
        self.pid
    }
}

#[derive(Debug)]
struct NatsPublisher {
    client: async_nats::Client,
}

impl Publisher for NatsPublisher {
    fn publish_batch<'a>(
        &'a mut self,
        topic: &'a str,
        payloads: &'a [Bytes],
    ) -> BoxFut<'a, anyhow::Result<()>> {
        Box::pin(async move {
            for p in payloads {
                // Queued to the connection task, which batches writes itself.
                self.client.publish(topic.to_owned(), p.clone()).await?;
            }
            Ok(())
        })
    }

    fn flush(&mut self) -> BoxFut<'_, anyhow::Result<()>> {
        Box::pin(async move { Ok(self.client.flush().await?) })
    }
}
