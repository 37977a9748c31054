//! The gateway shutting down (`lloom-client serve`'s first Ctrl-C) over real HTTP, in front of
//! a real validator and a slow scripted executor: an answer streaming when it begins finishes
//! within the drain time, no new connection is taken, and one that outlasts the drain time is
//! cut when it ends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::net::SocketAddr;
use std::time::Duration;

use lloom_client::gateway::GatewayConfig;
use lloom_core::http::HttpLimits;
use lloom_core::network::test_utils::WAIT;
use lloom_executor::backend::scripted::Script;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod gateway_net;
mod http;

use gateway_net::{MODEL, chat, network};
use http::sse_events;

/// A gateway whose answers are `words` words 40 ms apart, draining for at most `drain`.
async fn slow_gateway(words: usize, drain: Duration) -> gateway_net::Net {
    let script = Script {
        delay: Duration::from_millis(40),
        ..Script::answer(MODEL, &["tick"; 400][..words].join(" "))
    };
    let http = HttpLimits { shutdown_grace: drain, ..HttpLimits::default() };
    network(vec![script], GatewayConfig { http, ..GatewayConfig::default() }).await
}

/// Sends a streaming completion and waits for its first SSE event; returns the connection
/// and what was read so far.
async fn streaming(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let body = chat(&json!({"stream": true, "max_tokens": 500}));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("\"content\":\"tick") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the first event: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    (stream, raw)
}

/// Reads the rest of the response until the gateway closes the connection.
async fn rest(stream: &mut TcpStream, mut raw: Vec<u8>) -> String {
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.unwrap().unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_streaming_when_the_gateway_stops_finishes_and_no_new_one_starts() {
    let mut net = slow_gateway(20, Duration::from_secs(20)).await;
    let (mut stream, raw) = streaming(net.addr).await;
    let served = net.stop_gateway();
    // No new connection is taken once the shutdown begins.
    let refused = tokio::time::timeout(WAIT, async {
        while TcpStream::connect(net.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    refused.await.expect("the gateway still takes connections");
    let raw = rest(&mut stream, raw).await;
    let (_, body) = raw.split_once("\r\n\r\n").unwrap();
    let text: String = sse_events(body)
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, ["tick"; 20].join(" "), "the whole answer, then [DONE]");
    tokio::time::timeout(WAIT, served).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_longer_than_the_drain_time_is_cut_when_it_ends() {
    let mut net = slow_gateway(400, Duration::from_millis(300)).await;
    let (mut stream, raw) = streaming(net.addr).await;
    let began = tokio::time::Instant::now();
    let served = net.stop_gateway();
    tokio::time::timeout(WAIT, served).await.unwrap().unwrap().unwrap();
    let raw = rest(&mut stream, raw).await;
    assert!(began.elapsed() < Duration::from_secs(5), "stopped after {:?}", began.elapsed());
    assert!(!raw.contains("data: [DONE]"), "a 16-second answer cannot finish in 300 ms");
}
