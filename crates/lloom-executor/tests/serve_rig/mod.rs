//! What the request-server tests share: an executor node serving a scripted backend, a
//! client node, and signed requests with their exchanges over real libp2p streams.
#![allow(dead_code, unused_imports)] // each test file uses some of these

// The imports are shared with the test files (`use serve_rig::*`).

pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::Ordering;
pub(crate) use std::time::{Duration, Instant};

pub(crate) use futures::{AsyncReadExt, AsyncWriteExt};
pub(crate) use lloom_core::network::test_utils::{TestNode, WAIT};
pub(crate) use lloom_core::network::{NetworkConfig, Stream};
pub(crate) use lloom_core::verify::{verify_checkpoint, verify_error, verify_response};
pub(crate) use lloom_core::wire::{read_frame, request_hash, write_frame};
pub(crate) use lloom_core::{
    ChatMessage, ErrorCode, FinishReason, ModelOffer, NodeKey, ReplayStore, RequestBody,
    RequestCommitment, Role, SamplingParams, SignedRequest, U256, VerifyPolicy, WireLimits,
    WireMessage, unix_now,
};
pub(crate) use lloom_executor::backend::scripted::{Script, ScriptedBackend};
pub(crate) use lloom_executor::metrics::ExecutorMetrics;
pub(crate) use lloom_executor::serve::{
    RateLimits, ReceiptStore, ServeConfig, ServedModel, Server,
};

pub(crate) const MODEL: &str = "scripted";
pub(crate) const ANSWER: &str = "The capital of France is Paris , of course .";

pub(crate) struct Rig {
    pub(crate) executor: TestNode,
    pub(crate) client: TestNode,
    pub(crate) server: Server,
    pub(crate) backend: Arc<ScriptedBackend>,
    pub(crate) accept: tokio::task::JoinHandle<()>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) fn offer() -> ModelOffer {
    ModelOffer {
        model: MODEL.into(),
        context_length: 1024,
        price_per_input_token: U256::from(3),
        price_per_output_token: U256::from(5),
        weights_sha256: None,
        quantization: None,
        capabilities: vec![],
    }
}

pub(crate) async fn server_on(
    executor: &TestNode,
    backend: Arc<ScriptedBackend>,
    config: ServeConfig,
    dir: &std::path::Path,
) -> (Server, tokio::task::JoinHandle<()>) {
    let model = ServedModel { offer: offer(), backend };
    let server = Server::new(
        executor.key.clone(),
        config,
        vec![model],
        ReplayStore::open(&dir.join("replay.redb")).unwrap(),
        ReceiptStore::open(&dir.join("receipts.redb")).unwrap(),
    )
    .unwrap();
    let accept = server.spawn(&executor.handle).unwrap();
    (server, accept)
}

pub(crate) async fn rig(script: Script, config: ServeConfig) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let executor = TestNode::spawn_with(NetworkConfig::local()).await.unwrap();
    let backend = Arc::new(ScriptedBackend::new(script));
    let (server, accept) = server_on(&executor, backend.clone(), config, dir.path()).await;
    let client = TestNode::spawn_with(NetworkConfig {
        bootstrap: vec![executor.addr().await.unwrap()],
        ..NetworkConfig::local()
    })
    .await
    .unwrap();
    Rig { executor, client, server, backend, accept, dir }
}

pub(crate) fn config(checkpoint_every: u64) -> ServeConfig {
    ServeConfig { checkpoint_every, ..ServeConfig::default() }
}

pub(crate) fn commitment(
    client: &NodeKey,
    executor: &NodeKey,
    body: &RequestBody,
) -> RequestCommitment {
    RequestCommitment {
        client: client.address(),
        executor: executor.address(),
        model: MODEL.into(),
        requestHash: request_hash(body),
        maxInputTokens: 512,
        maxOutputTokens: 64,
        pricePerInputToken: U256::from(3),
        pricePerOutputToken: U256::from(5),
        nonce: 1,
        deadline: unix_now() + 60,
    }
}

pub(crate) fn body() -> RequestBody {
    RequestBody {
        messages: vec![ChatMessage { role: Role::User, content: "Capital of France?".into() }],
        sampling: SamplingParams::default(),
    }
}

pub(crate) fn signed(rig: &Rig, edit: impl FnOnce(&mut RequestCommitment)) -> SignedRequest {
    let body = body();
    let mut c = commitment(&rig.client.key, &rig.executor.key, &body);
    edit(&mut c);
    SignedRequest::sign(&rig.client.key, Default::default(), c, body).unwrap()
}

pub(crate) async fn open(rig: &Rig) -> Stream {
    let deadline = Instant::now() + WAIT;
    loop {
        match rig.client.handle.open_request_stream(rig.executor.key.peer_id()).await {
            Ok(stream) => return stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying stream open: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot open a stream: {e}"),
        }
    }
}

/// Sends `request` on a new stream, closes its sending side (no further request), and reads
/// every frame until the executor closes the stream.
pub(crate) async fn exchange(rig: &Rig, request: &SignedRequest) -> Vec<WireMessage> {
    let mut stream = open(rig).await;
    let limits = WireLimits::default();
    write_frame(&mut stream, &WireMessage::Request(request.clone()), &limits).await.unwrap();
    stream.close().await.unwrap();
    let mut frames = Vec::new();
    while let Some(frame) =
        tokio::time::timeout(WAIT, read_frame(&mut stream, &limits)).await.unwrap().unwrap()
    {
        frames.push(frame);
    }
    frames
}

pub(crate) fn the_error(frames: &[WireMessage]) -> &lloom_core::SignedError {
    match frames {
        [WireMessage::Error(e)] => e,
        other => panic!("expected exactly one signed error, got {other:?}"),
    }
}

/// Sends `request` on `stream` and reads the frames of its answer, up to the response or error.
pub(crate) async fn exchange_on(stream: &mut Stream, request: &SignedRequest) -> Vec<WireMessage> {
    let limits = WireLimits::default();
    write_frame(stream, &WireMessage::Request(request.clone()), &limits).await.unwrap();
    let mut frames = Vec::new();
    loop {
        let frame = tokio::time::timeout(WAIT, read_frame(stream, &limits)).await.unwrap().unwrap();
        let frame = frame.expect("the stream stays open until the answer is complete");
        let last = matches!(frame, WireMessage::Response(_) | WireMessage::Error(_));
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

/// A server with no models and its stores in `dir`, or the refusal of `config`.
pub(crate) fn server_in(
    dir: &std::path::Path,
    config: ServeConfig,
) -> lloom_executor::Result<Server> {
    Server::new(
        NodeKey::generate(),
        config,
        vec![],
        ReplayStore::open(&dir.join("replay.redb")).unwrap(),
        ReceiptStore::open(&dir.join("receipts.redb")).unwrap(),
    )
}
