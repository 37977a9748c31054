//! An executor in front of an OpenAI-compatible server that goes down, comes back, and reloads
//! its model with another context: the executor's watch withdraws the offer while the server
//! does not answer (the validator stops listing the model), offers it again once it does, and
//! announces and enforces the context the server gives a request now.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod listing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::AsyncWriteExt;
use lloom_client::directory::ModelRow;
use lloom_core::network::NetworkConfig;
use lloom_core::network::test_utils::{TestNode, WAIT};
use lloom_core::wire::{read_frame, request_hash, write_frame};
use lloom_core::{
    ChatMessage, ErrorCode, ModelOffer, NodeKey, RequestBody, RequestCommitment, Role,
    SamplingParams, SignedRequest, U256, WireLimits, WireMessage, unix_now,
};
use lloom_executor::backend::openai::{OpenAiBackend, OpenAiConfig};
use lloom_executor::metrics::ExecutorMetrics;
use lloom_executor::serve::ServedModel;
use lloom_executor::{ExecutorConfig, ExecutorNode};
use lloom_validator::{Validator, ValidatorConfig};

use listing::models_until;

/// What the scripted server answers to `GET /v1/models` now.
#[derive(Clone)]
struct Upstream(Arc<Mutex<(StatusCode, String)>>);

impl Upstream {
    fn serving(&self, context: u32) {
        let listing = format!(r#"{{"data":[{{"id":"remote","max_model_len":{context}}}]}}"#);
        *self.0.lock().unwrap() = (StatusCode::OK, listing);
    }

    fn down(&self) {
        *self.0.lock().unwrap() = (StatusCode::SERVICE_UNAVAILABLE, "{}".into());
    }
}

async fn models(State(upstream): State<Upstream>) -> (StatusCode, String) {
    upstream.0.lock().unwrap().clone()
}

async fn upstream() -> (Upstream, std::net::SocketAddr) {
    let upstream = Upstream(Arc::new(Mutex::new((StatusCode::OK, String::new()))));
    let app = Router::new().route("/v1/models", get(models)).with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (upstream, addr)
}

/// The executor's answer to a signed request for `max_output_tokens` from `client`.
async fn ask(client: &TestNode, executor: &NodeKey, max_output_tokens: u64) -> WireMessage {
    let body = RequestBody {
        messages: vec![ChatMessage { role: Role::User, content: "Capital of France?".into() }],
        sampling: SamplingParams::default(),
    };
    let commitment = RequestCommitment {
        client: client.key.address(),
        executor: executor.address(),
        model: "smol".into(),
        requestHash: request_hash(&body),
        maxInputTokens: 512,
        maxOutputTokens: max_output_tokens,
        pricePerInputToken: U256::from(1u64),
        pricePerOutputToken: U256::from(2u64),
        nonce: 1,
        deadline: unix_now() + 60,
    };
    let request = SignedRequest::sign(&client.key, Default::default(), commitment, body).unwrap();
    let mut stream = client.handle.open_request_stream(executor.peer_id()).await.unwrap();
    let limits = WireLimits::default();
    write_frame(&mut stream, &WireMessage::Request(request), &limits).await.unwrap();
    stream.close().await.unwrap();
    tokio::time::timeout(WAIT, read_frame(&mut stream, &limits)).await.unwrap().unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offer_follows_the_servers_health_and_context() {
    let config = ValidatorConfig {
        network: NetworkConfig { server_mode: true, ..NetworkConfig::local() },
        ..ValidatorConfig::default()
    };
    let validator = Validator::spawn(&NodeKey::generate(), config).await.unwrap();
    let addr = validator.listen_addrs().await.unwrap().remove(0);

    let (upstream, server_addr) = upstream().await;
    upstream.serving(2048);
    let backend = Arc::new(
        OpenAiBackend::new(OpenAiConfig {
            served_model: "smol".into(),
            ..OpenAiConfig::new(format!("http://{server_addr}/v1"), "remote")
        })
        .unwrap(),
    );
    let reported = backend.probe().await.unwrap().context_length.unwrap();
    let offer = ModelOffer {
        model: "smol".into(),
        context_length: reported,
        price_per_input_token: U256::from(1u64),
        price_per_output_token: U256::from(2u64),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::new(dir.path().join("executor"));
    config.network = NetworkConfig { bootstrap: vec![addr.clone()], ..NetworkConfig::local() };
    config.load_interval = Duration::from_millis(100);
    let key = NodeKey::generate();
    let served = ServedModel { offer, backend: backend.clone() };
    let executor = ExecutorNode::start(&key, vec![served], config).await.unwrap();
    let watched = backend.clone();
    let watch = tokio::spawn(async move { watched.watch(Duration::from_millis(100)).await });
    let metrics = ExecutorMetrics {
        server: executor.server.clone(),
        pool: None,
        free_memory: None,
        network: None,
    };
    let rows = models_until(&addr, |rows| !rows.is_empty()).await;
    assert_eq!((rows[0].model.as_str(), rows[0].max_context), ("smol", 2048));
    assert!(metrics.render(None).contains("lloom_executor_model_offered{model=\"smol\"} 1"));

    // The server stops answering: the model is withdrawn, not offered to fail.
    upstream.down();
    models_until(&addr, <[ModelRow]>::is_empty).await;
    assert!(metrics.render(None).contains("lloom_executor_model_offered{model=\"smol\"} 0"));
    let (status, health) = metrics.health();
    assert_eq!((status.as_u16(), &health["status"]), (503, &serde_json::json!("unavailable")));
    assert_eq!(health["models"][0]["offered"], false, "{health}");

    // It comes back with the model loaded with a shorter context: offered again, with it.
    upstream.serving(1024);
    let rows =
        models_until(&addr, |rows| rows.first().is_some_and(|r| r.max_context == 1024)).await;
    assert_eq!(rows[0].executors, 1);
    let page = metrics.render(None);
    assert!(page.contains("lloom_executor_model_offered{model=\"smol\"} 1"), "{page}");
    assert!(page.contains("lloom_executor_model_context_tokens{model=\"smol\"} 1024"), "{page}");
    let (status, health) = metrics.health();
    assert_eq!((status.as_u16(), &health["status"]), (200, &serde_json::json!("ok")));
    assert_eq!(health["models"][0]["context_length"], 1024, "{health}");

    // And enforced: more output tokens than the context now holds is refused, signed.
    let client = TestNode::spawn_with(NetworkConfig {
        bootstrap: executor.listen_addrs().await.unwrap(),
        ..NetworkConfig::local()
    })
    .await
    .unwrap();
    match ask(&client, &key, 2000).await {
        WireMessage::Error(error) => {
            assert_eq!(ErrorCode::from_code(error.commitment.code), ErrorCode::ContextExceeded);
            assert!(error.commitment.message.contains("context length 1024"), "{error:?}");
        }
        other => panic!("expected a signed ContextExceeded, got {other:?}"),
    }
    watch.abort();
    executor.shutdown().await.unwrap();
    validator.shutdown().await;
}

#[tokio::test]
async fn a_configured_context_stands_whatever_the_server_reports() {
    let (upstream, server_addr) = upstream().await;
    upstream.serving(8192);
    let backend = OpenAiBackend::new(OpenAiConfig {
        context_length: Some(2048),
        ..OpenAiConfig::new(format!("http://{server_addr}/v1"), "remote")
    })
    .unwrap();
    use lloom_executor::backend::Backend;
    assert_eq!(backend.context_length(), Some(2048), "before any probe");
    assert_eq!(backend.probe().await.unwrap().context_length, Some(8192));
    assert_eq!(backend.context_length(), Some(2048), "the operator's, not the server's");
    // Without one, the server's, kept when the server stops reporting it (an unloaded model).
    let backend =
        OpenAiBackend::new(OpenAiConfig::new(format!("http://{server_addr}/v1"), "remote"))
            .unwrap();
    assert_eq!(backend.context_length(), None);
    backend.probe().await.unwrap();
    assert_eq!(backend.context_length(), Some(8192));
    *upstream.0.lock().unwrap() = (StatusCode::OK, r#"{"data":[{"id":"remote"}]}"#.into());
    backend.probe().await.unwrap();
    assert_eq!(backend.context_length(), Some(8192));
    assert!(backend.health().is_ok());
    // A server that no longer lists the model is down for it.
    *upstream.0.lock().unwrap() = (StatusCode::OK, r#"{"data":[{"id":"other"}]}"#.into());
    assert!(backend.probe().await.is_err());
    assert!(backend.health().is_err());
}
