//! A validator, executors with scripted backends and a gateway in front of a client that sees
//! them all, for the gateway's HTTP tests.
#![allow(dead_code)] // each test file uses some of these

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::gateway::{GatewayConfig, serve};
use lloom_client::{Client, ClientConfig};
use lloom_core::network::test_utils::WAIT;
use lloom_core::network::{Multiaddr, NetworkConfig};
use lloom_core::{ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};
use serde_json::{Value, json};

pub(crate) const MODEL: &str = "scripted";

pub(crate) struct Net {
    _validator: Validator,
    _executors: Vec<ExecutorNode>,
    _dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
    /// Begins the gateway's shutdown (as its first Ctrl-C does).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The gateway's `serve`, which returns once it has shut down.
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Net {
    /// Shuts every executor down (each withdraws its offers).
    pub(crate) async fn stop_executors(&mut self) {
        for executor in self._executors.drain(..) {
            executor.shutdown().await.unwrap();
        }
    }

    /// Begins the gateway's shutdown and returns its `serve` task.
    pub(crate) fn stop_gateway(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let _ = self.stop.take().expect("stopped once").send(());
        self.served.take().expect("serving")
    }
}

pub(crate) async fn network(scripts: Vec<Script>, config: GatewayConfig) -> Net {
    network_priced(scripts.into_iter().map(|s| (s, 3)).collect(), config).await
}

/// [`network`] with each executor's price per output token (wei) given beside its script.
pub(crate) async fn network_priced(scripts: Vec<(Script, u64)>, config: GatewayConfig) -> Net {
    network_with(scripts, config, ClientConfig::default()).await
}

/// [`network_priced`] with the gateway's client configured from `client` (bootstrap aside).
pub(crate) async fn network_with(
    scripts: Vec<(Script, u64)>,
    config: GatewayConfig,
    client: ClientConfig,
) -> Net {
    let dir = tempfile::tempdir().unwrap();
    let vconfig = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), vconfig).await.unwrap();
    let bootstrap: Vec<Multiaddr> = validator.listen_addrs().await.unwrap();
    let mut executors = Vec::new();
    for (script, price_out) in scripts {
        let key = NodeKey::generate();
        let mut config = ExecutorConfig::new(dir.path().join(key.address().to_string()));
        config.network = NetworkConfig { bootstrap: bootstrap.clone(), ..NetworkConfig::local() };
        let offer = ModelOffer {
            model: script.model.clone(),
            context_length: 1024,
            price_per_input_token: U256::from(2),
            price_per_output_token: U256::from(price_out),
            weights_sha256: None,
            quantization: None,
            capabilities: vec![],
        };
        let model = ServedModel { offer, backend: Arc::new(ScriptedBackend::new(script)) };
        executors.push(ExecutorNode::start(&key, vec![model], config).await.unwrap());
    }
    let client = Client::connect(NodeKey::generate(), client.bootstrap(bootstrap)).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while client.refresh().await.unwrap() < executors.len() {
        assert!(Instant::now() < deadline, "executors never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let served = tokio::spawn(serve(client, listener, config, shutdown));
    Net {
        _validator: validator,
        _executors: executors,
        _dir: dir,
        addr,
        stop: Some(stop),
        served: Some(served),
    }
}

pub(crate) fn chat(extra: &Value) -> Vec<u8> {
    let mut request = json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
    });
    request.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    request.to_string().into_bytes()
}
