//! What the chat tests share: a validator, executors with scripted backends, and clients that
//! wait until they see them.
#![allow(dead_code)] // each test file uses some of these

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::{ChatRequest, Client, ClientConfig, Strategy};
use lloom_core::network::test_utils::WAIT;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

pub(crate) const MODEL: &str = "scripted";

pub(crate) fn offer(price: u64) -> ModelOffer {
    ModelOffer {
        model: MODEL.into(),
        context_length: 1024,
        price_per_input_token: U256::from(price),
        price_per_output_token: U256::from(price * 2),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    }
}

pub(crate) async fn validator() -> (Validator, Vec<Multiaddr>) {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let v = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let addrs = v.listen_addrs().await.unwrap();
    (v, addrs)
}

pub(crate) async fn executor(
    bootstrap: &[Multiaddr],
    script: Script,
    price: u64,
    dir: &tempfile::TempDir,
) -> (ExecutorNode, NodeKey) {
    let key = NodeKey::generate();
    let data = dir.path().join(key.address().to_string());
    (executor_as(&key, bootstrap, script, price, data).await, key)
}

/// Starts an executor with `key`, keeping its data in `data`.
pub(crate) async fn executor_as(
    key: &NodeKey,
    bootstrap: &[Multiaddr],
    script: Script,
    price: u64,
    data: std::path::PathBuf,
) -> ExecutorNode {
    executor_offering(key, bootstrap, script, offer(price), data).await
}

/// Starts an executor with `key` that announces `offer`, keeping its data in `data`.
pub(crate) async fn executor_offering(
    key: &NodeKey,
    bootstrap: &[Multiaddr],
    script: Script,
    offer: ModelOffer,
    data: std::path::PathBuf,
) -> ExecutorNode {
    let mut config = ExecutorConfig::new(data);
    config.network = NetworkConfig { bootstrap: bootstrap.to_vec(), ..NetworkConfig::local() };
    let model = ServedModel { offer, backend: Arc::new(ScriptedBackend::new(script)) };
    ExecutorNode::start(key, vec![model], config).await.unwrap()
}

/// Connects a client and waits until it sees `count` executors.
pub(crate) async fn client(bootstrap: &[Multiaddr], strategy: Strategy, count: usize) -> Client {
    let config = ClientConfig::default().bootstrap(bootstrap.to_vec()).strategy(strategy);
    connect(config, count).await
}

/// Connects a client with `config` and waits until it sees `count` executors.
pub(crate) async fn connect(config: ClientConfig, count: usize) -> Client {
    let client = Client::connect(NodeKey::generate(), config).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while client.refresh().await.unwrap() < count {
        assert!(Instant::now() < deadline, "executors did not appear in the registry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
}

pub(crate) fn ask() -> ChatRequest {
    ChatRequest { timeout: WAIT, ..ChatRequest::user(MODEL, "Capital of France?") }
}

/// What `client` has measured of `executor` (it must have tried it).
pub(crate) async fn stats_of(
    client: &Client,
    executor: lloom_core::Address,
) -> lloom_client::routing::ExecutorStats {
    let stats = client.executor_stats().await;
    stats.into_iter().find(|(a, _)| *a == executor).expect("the executor was tried").1
}
