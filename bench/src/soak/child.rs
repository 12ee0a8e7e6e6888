//! `lapwing-soak child`: a client process the soak starts and later kills
//! with SIGKILL (no close, no goodbye): it subscribes to a few topics and
//! publishes to one, on QUIC or gRPC, until it is killed or `seconds` pass.

use std::time::Duration;

use futures::StreamExt;
use lapwing_client::{Client, ClientConfig, SubscribeOptions, Trust};
use lapwing_proto::v1::bus_client::BusClient;
use lapwing_proto::v1::{PublishRequest, SubscribeRequest};
use tokio::task::JoinSet;

#[derive(Debug, clap::Args)]
pub(crate) struct ChildArgs {
    /// `quic` or `grpc`.
    #[arg(long)]
    pub(crate) edge: String,
    #[arg(long)]
    pub(crate) quic: String,
    #[arg(long)]
    pub(crate) grpc: String,
    #[arg(long)]
    pub(crate) cert: std::path::PathBuf,
    /// Topics to subscribe to (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub(crate) topics: Vec<String>,
    /// Topic to publish to, 100 msgs/s.
    #[arg(long)]
    pub(crate) publish_topic: String,
    /// Exit by itself after this long.
    #[arg(long, default_value_t = 120)]
    pub(crate) seconds: u64,
}

pub(crate) async fn run(a: ChildArgs) -> anyhow::Result<()> {
    let life = Duration::from_secs(a.seconds);
    match tokio::time::timeout(life, live(&a)).await {
        Ok(r) => r,
        Err(_) => Ok(()),
    }
}

async fn live(a: &ChildArgs) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    if a.edge == "grpc" {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", a.grpc))?
            .connect()
            .await?;
        for topic in &a.topics {
            let mut bus = BusClient::new(channel.clone());
            let mut stream = bus
                .subscribe(SubscribeRequest {
                    topic: topic.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            tasks.spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
        }
        let mut bus = BusClient::new(channel);
        for i in 0..a.seconds * 100 {
            tick.tick().await;
            bus.publish(PublishRequest {
                topic: a.publish_topic.clone(),
                payload: format!("child {i}").into(),
            })
            .await?;
        }
    } else {
        let mut cfg = ClientConfig::new(a.quic.clone(), Trust::CaFile(a.cert.clone()));
        cfg.client_name = "soak-child".into();
        let client = Client::connect(cfg).await?;
        for topic in &a.topics {
            let mut sub = client.subscribe(topic, SubscribeOptions::default()).await?;
            tasks.spawn(async move { while let Some(Ok(_)) = sub.next().await {} });
        }
        let publisher = client.publisher();
        for i in 0..a.seconds * 100 {
            tick.tick().await;
            publisher
                .publish(&a.publish_topic, format!("child {i}"))
                .await?;
        }
    }
    Ok(())
}
