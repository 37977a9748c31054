//! An HTTP/1.1 server for the nodes' HTTP endpoints (the client's gateway, the executor's
//! metrics) that bounds what a peer can make it hold: at most [`HttpLimits::max_connections`]
//! connections at once (one more is closed as soon as it is accepted), and a connection that
//! does not send a request's headers within [`HttpLimits::header_timeout`] (an idle keep-alive
//! connection, or a slow-loris one) is closed. `axum::serve` sets neither bound. Connections
//! run with `TCP_NODELAY`, so streamed answers are not held back by Nagle's algorithm.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What one HTTP server holds at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, counted from the connection's start or the end
    /// of the previous response.
    pub header_timeout: Duration,
    /// Time open connections get to finish once shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Connections an [`HttpServer`] closed at once because it had [`HttpLimits::max_connections`]
/// open.
#[derive(Clone, Debug, Default)]
pub struct RefusedConnections(Arc<AtomicU64>);

impl RefusedConnections {
    /// How many so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A bounded HTTP/1.1 server for one [`Router`].
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    limits: HttpLimits,
    refused: RefusedConnections,
}

impl HttpServer {
    /// A server that will accept on `listener` within `limits`.
    pub fn new(listener: TcpListener, limits: HttpLimits) -> Self {
        Self { listener, limits, refused: RefusedConnections::default() }
    }

    /// A counter of the connections refused for the connection limit, to read while it serves.
    pub fn refused(&self) -> RefusedConnections {
        self.refused.clone()
    }

    /// Serves `router` until `shutdown` resolves, then lets open connections finish their
    /// requests for up to [`HttpLimits::shutdown_grace`]; those still open then are closed
    /// before it returns.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self { listener, limits, refused } = self;
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        // Every connection's task, so that those still open after the grace period are ended
        // with `serve`, not left running behind it.
        let mut connections = JoinSet::new();
        loop {
            // Finished tasks are collected as connections come, so the set holds live ones.
            while connections.try_join_next().is_some() {}
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors, say: wait a little rather than spin.
                        tracing::warn!(%error, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused.0.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            };
            // Answers are streamed in small writes (SSE events): without this, Nagle's
            // algorithm holds each one back until the peer's delayed ACK, some 40 ms.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let service = TowerToHyperService::new(router.clone());
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            connections.spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(listener);
        if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
            tracing::debug!(
                open = connections.len(),
                "HTTP connections still open after the shutdown grace period; closing them"
            );
        }
        connections.shutdown().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Longest any of these waits may take before the test fails.
    const WAIT: Duration = Duration::from_secs(10);

    async fn start(
        limits: HttpLimits,
    ) -> (
        SocketAddr,
        RefusedConnections,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = HttpServer::new(listener, limits);
        let refused = server.refused();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new().route("/", get(|| async { "hello" }));
        let task = tokio::spawn(server.serve(router, async move {
            let _ = stopped.await;
        }));
        (addr, refused, stop, task)
    }

    /// Reads until the server closes the connection; fails the test if it does not in time.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
            .await
            .expect("the server kept the connection open")
            .unwrap_or_default();
        String::from_utf8_lossy(&raw).into_owned()
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_at_once_and_slots_come_back() {
        let limits =
            HttpLimits { max_connections: 2, header_timeout: WAIT * 3, ..HttpLimits::default() };
        let (addr, refused, _stop, _task) = start(limits).await;
        let mut held =
            [TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert_eq!(until_closed(&mut third).await, "", "the third connection was served");
        assert_eq!(refused.get(), 1);
        // The held connections are still served.
        held[0].write_all(GET).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(WAIT, held[0].read(&mut buf)).await.unwrap().unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200 OK") && head.ends_with("hello"), "{head}");
        // Closing one frees its slot for a new connection.
        drop(held);
        let deadline = Instant::now() + WAIT;
        loop {
            let mut next = TcpStream::connect(addr).await.unwrap();
            next.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            if until_closed(&mut next).await.starts_with("HTTP/1.1 200 OK") {
                break;
            }
            assert!(Instant::now() < deadline, "the slots never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn silent_slow_and_idle_connections_are_closed_after_the_header_timeout() {
        let limits =
            HttpLimits { header_timeout: Duration::from_millis(300), ..HttpLimits::default() };
        let (addr, _, _stop, _task) = start(limits).await;
        // Says nothing.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        until_closed(&mut silent).await;
        // Sends half a request line and stops (slow loris).
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
        assert!(!until_closed(&mut slow).await.contains("200 OK"));
        // Asks once, then stays idle on keep-alive: answered, then closed.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(GET).await.unwrap();
        let answer = until_closed(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello"), "{answer}");
    }

    #[tokio::test]
    async fn serving_ends_when_shutdown_resolves() {
        let (addr, _, stop, task) = start(HttpLimits::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(GET).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(WAIT, client.read(&mut buf)).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 OK"));
        stop.send(()).unwrap();
        // The idle keep-alive connection is closed within the grace period, and serve returns.
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
        assert_eq!(until_closed(&mut client).await, "");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
