//! A local network for benchmarks: a validator, executors with given backends, and clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lloom_client::{Client, ClientConfig};
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{ModelOffer, NodeKey, U256};
use lloom_executor::backend::Backend;
use lloom_executor::serve::{RateLimits, ServeConfig, ServedModel};
use lloom_executor::{ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

/// The running nodes; dropped together.
pub(crate) struct LocalNet {
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) executors: Vec<ExecutorNode>,
    _validator: Validator,
    _dir: tempfile::TempDir,
}

/// The model name benchmarks ask for.
pub(crate) const MODEL: &str = "bench";

/// The offer benchmark executors make: 1 and 2 wei per input and output token.
pub(crate) fn offer(model: &str) -> ModelOffer {
    ModelOffer {
        model: model.into(),
        context_length: 4096,
        price_per_input_token: U256::from(1),
        price_per_output_token: U256::from(2),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    }
}

/// Starts a validator (a DHT server) on loopback; returns it and its addresses.
pub(crate) async fn validator() -> anyhow::Result<(Validator, Vec<Multiaddr>)> {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), config).await?;
    let bootstrap = validator.listen_addrs().await?;
    Ok((validator, bootstrap))
}

/// Starts a validator and one executor per backend (no rate limits, no checkpoints unless
/// `checkpoint_every` is set, the executor's default commit delay).
pub(crate) async fn start(
    backends: Vec<Arc<dyn Backend>>,
    checkpoint_every: u64,
) -> anyhow::Result<LocalNet> {
    start_with(backends, checkpoint_every, ServeConfig::default().commit_delay).await
}

/// [`start`] with the receipt writer's commit delay given.
pub(crate) async fn start_with(
    backends: Vec<Arc<dyn Backend>>,
    checkpoint_every: u64,
    commit_delay: Duration,
) -> anyhow::Result<LocalNet> {
    let dir = tempfile::tempdir()?;
    let (validator, bootstrap) = validator().await?;
    let mut executors = Vec::new();
    for backend in backends {
        let key = NodeKey::generate();
        let mut config = ExecutorConfig::new(dir.path().join(key.address().to_string()));
        config.network = NetworkConfig {
            bootstrap: bootstrap.clone(),
            max_connections_per_peer: 8,
            ..NetworkConfig::local()
        };
        config.serve = ServeConfig {
            checkpoint_every,
            rate_limits: RateLimits {
                requests_per_minute: None,
                tokens_per_minute: None,
                ..RateLimits::default()
            },
            max_streams: 4096,
            commit_delay,
            ..ServeConfig::default()
        };
        let offer = offer(MODEL);
        executors
            .push(ExecutorNode::start(&key, vec![ServedModel { offer, backend }], config).await?);
    }
    Ok(LocalNet { bootstrap, executors, _validator: validator, _dir: dir })
}

impl LocalNet {
    /// A client that already sees every executor.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(None).await
    }

    /// [`LocalNet::client`], keeping its verified receipts in `receipts` if given.
    pub(crate) async fn client_with(
        &self,
        receipts: Option<Arc<lloom_client::receipts::ReceiptStore>>,
    ) -> anyhow::Result<Client> {
        let config = ClientConfig {
            max_attempts: 1,
            idle_timeout: Duration::from_secs(60),
            receipts,
            ..ClientConfig::default().bootstrap(self.bootstrap.clone())
        };
        let client = Client::connect(NodeKey::generate(), config).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.refresh().await.context("refreshing the directory")? < self.executors.len() {
            if Instant::now() > deadline {
                bail!("executors did not appear in the registry");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(client)
    }
}

/// A receipt store for a benchmark's client in `dir`, if `keep` (as the CLI and the gateway
/// keep one).
pub(crate) fn client_receipts(
    dir: &tempfile::TempDir,
    keep: bool,
) -> anyhow::Result<Option<Arc<lloom_client::receipts::ReceiptStore>>> {
    Ok(match keep {
        true => Some(Arc::new(lloom_client::receipts::ReceiptStore::open(
            &dir.path().join("client-receipts.redb"),
        )?)),
        false => None,
    })
}

/// p50 and p99 of `samples`, in microseconds.
pub(crate) fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in [0, len)
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    (at(0.50), at(0.99))
}

/// Resident set size of this process, in MiB.
pub(crate) fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
