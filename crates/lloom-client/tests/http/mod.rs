//! Plain HTTP/1.1 exchanges with the gateway, for the tests that talk to it over TCP.
#![allow(dead_code)] // each test file uses some of these

use std::net::SocketAddr;

use lloom_core::network::test_utils::WAIT;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange; returns status, lower-cased headers and the body.
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String, String) {
    http_with(addr, method, path, "", body).await
}

/// [`http`] with extra header lines (each ending in `\r\n`).
pub(crate) async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    (status, head.to_lowercase(), body.to_owned())
}

/// The value of header `name` (lower case) in a response head from [`http`].
#[allow(dead_code)] // not every test binary reads headers
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")).map(str::trim)
}

pub(crate) fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The JSON events of a streamed completion, which must end with `[DONE]`.
pub(crate) fn sse_events(raw: &str) -> Vec<Value> {
    assert!(raw.contains("data: [DONE]"), "{raw}");
    raw.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(json_body)
        .collect()
}
