//! The OpenAI-compatible HTTP backend against scripted HTTP servers (exact bytes, split where
//! it hurts) and against a real OpenAI-compatible server: Lloom's own gateway in front of the
//! embedded engine.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lloom_core::{ChatMessage, FinishReason, Role, SamplingParams};
use lloom_executor::backend::openai::{OpenAiBackend, OpenAiConfig};
use lloom_executor::backend::{Backend, GenerateRequest, GenerationEvent, Usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted server answers to the n-th request: a status, then body pieces written
/// one by one with a pause between them.
#[derive(Clone)]
struct Answer {
    status: &'static str,
    pieces: Vec<String>,
    pause: Duration,
}

fn sse(pieces: &[&str]) -> Answer {
    Answer {
        status: "200 OK",
        pieces: pieces.iter().map(|p| (*p).to_owned()).collect(),
        pause: Duration::from_millis(5),
    }
}

/// A server answering requests in turn with `answers` (the last one repeats).
async fn server(answers: Vec<Answer>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let n = count.fetch_add(1, Ordering::SeqCst);
            let answer = answers[n.min(answers.len() - 1)].clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await; // head and (small) body
                let sse = answer.status.starts_with("200");
                let content_type = if sse { "text/event-stream" } else { "application/json" };
                let head = format!(
                    "HTTP/1.1 {}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n",
                    answer.status
                );
                let _ = socket.write_all(head.as_bytes()).await;
                for piece in &answer.pieces {
                    let _ = socket.write_all(piece.as_bytes()).await;
                    let _ = socket.flush().await;
                    tokio::time::sleep(answer.pause).await;
                }
            });
        }
    });
    (addr, served)
}

fn backend(addr: SocketAddr, tweak: impl FnOnce(&mut OpenAiConfig)) -> OpenAiBackend {
    let mut config = OpenAiConfig::new(format!("http://{addr}/v1"), "remote-model");
    config.read_timeout = Duration::from_secs(5);
    tweak(&mut config);
    OpenAiBackend::new(config).unwrap()
}

fn ask() -> GenerateRequest {
    GenerateRequest {
        messages: vec![ChatMessage { role: Role::User, content: "Capital of France?".into() }],
        sampling: SamplingParams::default(),
        max_tokens: 32,
        max_input_tokens: None,
        client: None,
    }
}

const CHUNK_A: &str =
    r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Par"}}]}"#;
const CHUNK_B: &str =
    r#"data: {"choices":[{"index":0,"delta":{"content":"is"},"finish_reason":null}]}"#;
const FINISH: &str = r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
const USAGE: &str =
    r#"data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}"#;

#[tokio::test]
async fn events_split_across_reads_comments_done_and_usage_in_the_last_chunk() {
    // Events are cut in the middle of "data:", of the JSON and of the blank line.
    let whole = format!(
        ": keep-alive\n\n{CHUNK_A}\n\n:ping\n\n{CHUNK_B}\n\n{FINISH}\n\n{USAGE}\n\ndata: [DONE]\n\n"
    );
    let cuts = [3, 20, 21, 90, 91, 150, 200, whole.len() - 3];
    let mut pieces = Vec::new();
    let mut last = 0;
    for cut in cuts {
        pieces.push(whole[last..cut].to_owned());
        last = cut;
    }
    pieces.push(whole[last..].to_owned());
    let (addr, _) =
        server(vec![Answer { status: "200 OK", pieces, pause: Duration::from_millis(5) }]).await;
    let (text, usage) = backend(addr, |_| {}).generate(ask()).unwrap().collect().await.unwrap();
    assert_eq!(text, "Paris");
    assert_eq!(usage, Usage { input_tokens: 12, output_tokens: 2, finish: FinishReason::Stop });
}

#[tokio::test]
async fn missing_usage_is_estimated_and_length_is_reported() {
    let finish_length = r#"data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#;
    let (addr, _) = server(vec![sse(&[&format!(
        "{CHUNK_A}\n\n{CHUNK_B}\n\n{finish_length}\n\ndata: [DONE]\n\n"
    )])])
    .await;
    let (text, usage) = backend(addr, |_| {}).generate(ask()).unwrap().collect().await.unwrap();
    assert_eq!(text, "Paris");
    // Two content deltas; "Capital of France?" is 18 bytes → 5 tokens estimated.
    assert_eq!(usage, Usage { input_tokens: 5, output_tokens: 2, finish: FinishReason::Length });
}

#[tokio::test]
async fn error_bodies_are_reported_with_the_upstream_message() {
    let body = r#"{"error":{"message":"Invalid API key","type":"invalid_request_error"}}"#;
    let (addr, served) = server(vec![Answer {
        status: "401 Unauthorized",
        pieces: vec![body.into()],
        pause: Duration::ZERO,
    }])
    .await;
    let err = backend(addr, |_| {}).generate(ask()).unwrap().collect().await.unwrap_err();
    assert_eq!(err, "HTTP 401: Invalid API key");
    assert_eq!(served.load(Ordering::SeqCst), 1, "a 401 is not retried");

    // An error event inside the stream.
    let (addr, _) =
        server(vec![sse(&["data: {\"error\":{\"message\":\"model crashed\"}}\n\n"])]).await;
    let err = backend(addr, |_| {}).generate(ask()).unwrap().collect().await.unwrap_err();
    assert!(err.contains("model crashed"), "{err}");
}

#[tokio::test]
async fn a_prompt_too_long_for_the_servers_context_is_told_apart_and_not_retried() {
    // How OpenAI / vLLM, llama.cpp's server and LM Studio say it.
    let bodies = [
        r#"{"error":{"message":"This model's maximum context length is 2048 tokens. However, you requested 4000 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
        r#"{"object":"error","message":"This model's maximum context length is 2048 tokens. However, you requested 2100 tokens (2000 in the messages, 100 in the completion).","type":"BadRequestError","code":400}"#,
        r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}"#,
        r#"{"error":"The number of tokens to keep from the initial prompt is greater than the context length."}"#,
    ];
    // Where the server counts the prompt, the signed message leads with the count.
    let leads = [
        "HTTP 400: ",
        "prompt has 2000 tokens: HTTP 400: ",
        "prompt has 5000 tokens: HTTP 400: ",
        "HTTP 400: ",
    ];
    for (body, lead) in bodies.into_iter().zip(leads) {
        let answer =
            Answer { status: "400 Bad Request", pieces: vec![body.into()], pause: Duration::ZERO };
        let (addr, served) = server(vec![answer]).await;
        let mut generation = backend(addr, |_| {}).generate(ask()).unwrap();
        match generation.events.recv().await {
            Some(GenerationEvent::ContextExceeded(message)) => {
                assert!(message.starts_with(lead), "{message}");
            }
            other => panic!("{body}: expected ContextExceeded, got {other:?}"),
        }
        assert_eq!(generation.events.recv().await, None);
        assert_eq!(served.load(Ordering::SeqCst), 1, "not retried");
    }

    // Another 400 stays a failure of the backend.
    let body =
        r#"{"error":{"message":"temperature must be at most 2","type":"invalid_request_error"}}"#;
    let answer =
        Answer { status: "400 Bad Request", pieces: vec![body.into()], pause: Duration::ZERO };
    let (addr, _) = server(vec![answer]).await;
    let mut generation = backend(addr, |_| {}).generate(ask()).unwrap();
    assert!(matches!(generation.events.recv().await, Some(GenerationEvent::Failed(_))));
}

#[tokio::test]
async fn overloaded_servers_are_retried_before_any_text_only() {
    let busy = Answer {
        status: "503 Service Unavailable",
        pieces: vec!["overloaded".into()],
        pause: Duration::ZERO,
    };
    let ok = sse(&[&format!("{CHUNK_A}\n\n{USAGE}\n\ndata: [DONE]\n\n")]);
    let (addr, served) = server(vec![busy.clone(), busy, ok]).await;
    let (text, _) = backend(addr, |_| {}).generate(ask()).unwrap().collect().await.unwrap();
    assert_eq!(text, "Par");
    assert_eq!(served.load(Ordering::SeqCst), 3);

    // A stream that breaks after text is not repeated.
    let (addr, served) = server(vec![sse(&[&format!("{CHUNK_A}\n\n")])]).await;
    let err = backend(addr, |_| {}).generate(ask()).unwrap().collect().await.unwrap_err();
    assert!(err.contains("ended without [DONE]"), "{err}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dead_server_and_a_stalled_stream_fail_clearly() {
    // Nothing listens on this port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let b = backend(dead, |c| c.max_retries = 1);
    let err = b.generate(ask()).unwrap().collect().await.unwrap_err();
    assert!(err.contains("unreachable"), "{err}");
    assert!(b.health().is_err(), "health reports the dead server");

    let stall = Answer {
        status: "200 OK",
        pieces: vec![format!("{CHUNK_A}\n\n"), String::new()],
        pause: Duration::from_secs(3),
    };
    let (addr, _) = server(vec![stall]).await;
    let b = backend(addr, |c| c.read_timeout = Duration::from_millis(300));
    let err = b.generate(ask()).unwrap().collect().await.unwrap_err();
    assert!(err.contains("stalled"), "{err}");
}

#[tokio::test]
async fn oversized_events_and_a_full_backend_are_refused() {
    let huge = format!("data: {}", "x".repeat(10_000));
    let (addr, _) = server(vec![sse(&[&huge])]).await;
    let b = backend(addr, |c| c.max_event_bytes = 4096);
    let err = b.generate(ask()).unwrap().collect().await.unwrap_err();
    assert!(err.contains("larger than 4096 bytes"), "{err}");

    let slow = Answer {
        status: "200 OK",
        pieces: vec![format!("{CHUNK_A}\n\n"); 50],
        pause: Duration::from_millis(50),
    };
    let (addr, _) = server(vec![slow]).await;
    let b = backend(addr, |c| c.max_concurrent = 1);
    let first = b.generate(ask()).unwrap();
    assert!(matches!(b.generate(ask()), Err(lloom_executor::Error::Busy(_))));
    drop(first);
}

#[tokio::test]
async fn cancellation_stops_reading_and_reports_cancelled() {
    let slow = Answer {
        status: "200 OK",
        pieces: vec![format!("{CHUNK_A}\n\n"); 100],
        pause: Duration::from_millis(20),
    };
    let (addr, _) = server(vec![slow]).await;
    let b = backend(addr, |_| {});
    let mut g = b.generate(ask()).unwrap();
    while !matches!(g.events.recv().await, Some(GenerationEvent::Text { .. })) {}
    g.cancel();
    let mut done = None;
    while let Some(event) = g.events.recv().await {
        if let GenerationEvent::Done(usage) = event {
            done = Some(usage);
        }
    }
    let usage = done.unwrap();
    assert_eq!(usage.finish, FinishReason::Cancelled);
    assert!(usage.output_tokens < 100);
}

#[tokio::test]
async fn probe_checks_the_model_is_listed() {
    let listing = r#"{"object":"list","data":[{"id":"remote-model","object":"model"}]}"#;
    let answer = Answer { status: "200 OK", pieces: vec![listing.into()], pause: Duration::ZERO };
    let (addr, _) = server(vec![answer]).await;
    backend(addr, |_| {}).probe().await.unwrap();
    let (addr, _) = server(vec![Answer {
        status: "200 OK",
        pieces: vec![listing.into()],
        pause: Duration::ZERO,
    }])
    .await;
    let err = backend(addr, |c| c.remote_model = "other".into()).probe().await.unwrap_err();
    assert!(err.to_string().contains("does not list model `other`"), "{err}");
}

#[tokio::test]
async fn probe_reads_the_context_the_server_gives_a_request() {
    let json =
        |body: &str| Answer { status: "200 OK", pieces: vec![body.into()], pause: Duration::ZERO };
    // vLLM lists it with the model.
    let vllm = r#"{"object":"list","data":[{"id":"other","max_model_len":2048},
        {"id":"remote-model","object":"model","max_model_len":32768}]}"#;
    let (addr, served) = server(vec![json(vllm)]).await;
    assert_eq!(backend(addr, |_| {}).probe().await.unwrap().context_length, Some(32_768));
    assert_eq!(served.load(Ordering::SeqCst), 1, "nothing more asked");
    // llama.cpp's server lists only its training context; one slot's is in GET /props.
    let llama = r#"{"object":"list","data":[{"id":"remote-model","meta":{"n_ctx_train":8192}}]}"#;
    let props = r#"{"default_generation_settings":{"n_ctx":2048},"total_slots":4}"#;
    let (addr, served) = server(vec![json(llama), json(props)]).await;
    assert_eq!(backend(addr, |_| {}).probe().await.unwrap().context_length, Some(2048));
    assert_eq!(served.load(Ordering::SeqCst), 2);
    // LM Studio: neither, but its own model list has the loaded model's context.
    let lm_studio = r#"{"object":"list","data":[{"id":"remote-model","state":"loaded",
        "max_context_length":131072,"loaded_context_length":8192}]}"#;
    let plain = r#"{"object":"list","data":[{"id":"remote-model"}]}"#;
    let missing =
        Answer { status: "404 Not Found", pieces: vec!["{}".into()], pause: Duration::ZERO };
    let (addr, served) = server(vec![json(plain), missing.clone(), json(lm_studio)]).await;
    assert_eq!(backend(addr, |_| {}).probe().await.unwrap().context_length, Some(8192));
    assert_eq!(served.load(Ordering::SeqCst), 3);
    // Ollama: only its list of running models has the loaded context.
    let ollama = r#"{"models":[{"name":"remote-model:latest","model":"remote-model:latest",
        "context_length":4096}]}"#;
    let answers = vec![json(plain), missing.clone(), missing.clone(), json(ollama)];
    let (addr, served) = server(answers).await;
    assert_eq!(backend(addr, |_| {}).probe().await.unwrap().context_length, Some(4096));
    assert_eq!(served.load(Ordering::SeqCst), 4);
    // A server that reports nothing (its other endpoints 404s, or not JSON): none.
    let (addr, _) = server(vec![json(plain), missing]).await;
    assert_eq!(backend(addr, |_| {}).probe().await.unwrap().context_length, None);
    let (addr, _) = server(vec![json(plain), json("<html>")]).await;
    assert_eq!(backend(addr, |_| {}).probe().await.unwrap().context_length, None);
    // Endpoints that never finish answering do not hold the start up past the connect timeout.
    let stall = Answer {
        status: "200 OK",
        pieces: vec!["{".into(), "}".into()],
        pause: Duration::from_secs(30),
    };
    let (addr, _) = server(vec![json(plain), stall]).await;
    let started = std::time::Instant::now();
    let quick = backend(addr, |c| c.connect_timeout = Duration::from_millis(200));
    assert_eq!(quick.probe().await.unwrap().context_length, None);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
