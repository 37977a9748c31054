//! Failover: time to a verified answer when the executor a client would choose first is no
//! longer where its directory says, next to the time when it is.
//!
//! One validator stays up. Each run starts, for a model of its own, a fallback executor, a
//! cheaper one (which strategy `cheapest` picks first) and a fresh client whose directory lists
//! both, then:
//! - `live`: asks at once (the baseline: a first dial, a request, a verified answer);
//! - `gone`: stops the executor first (its ports refuse); the answer comes from the fallback;
//! - `moved`: stops it and starts it again with the same key on other ports, waits until the
//!   validator lists the new ones; the answer comes from the same executor there.
//!
//! Before the client learnt each dial's outcome, an attempt at a dead address waited for the
//! idle timeout (30 s by default): the `gone` and `moved` cases showed as 30 s.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lloom_client::{Client, ClientConfig, Strategy};
use lloom_core::network::{Multiaddr, NetworkConfig, Protocol};
use lloom_core::{ModelOffer, NodeKey, U256};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};
use lloom_executor::serve::ServedModel;
use lloom_executor::{ExecutorConfig, ExecutorNode};

use crate::net::percentiles;

/// Longest wait for a port to close or a registry to list an executor.
const LIMIT: Duration = Duration::from_secs(30);

/// What happened to the first choice before the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Live,
    Gone,
    Moved,
}

pub(crate) async fn run(runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_validator, bootstrap) = crate::net::validator().await?;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for run in 0..runs {
        for (case, samples) in [Case::Live, Case::Gone, Case::Moved].into_iter().zip(&mut times) {
            let data = dir.path().join(format!("{case:?}-{run}"));
            let model = format!("failover-{case:?}-{run}");
            samples.push(one(case, &model, &bootstrap, &data).await?);
        }
    }
    println!(
        "failover over {runs} runs each (loopback; fresh client per run, first dial included):"
    );
    let labels = [
        "first choice live (baseline)",
        "first choice gone → fallback",
        "first choice moved → same one",
    ];
    for (label, samples) in labels.into_iter().zip(&mut times) {
        let (p50, p99) = percentiles(samples);
        println!("  {label:<31} p50 {:>7.2} ms  p99 {:>7.2} ms", p50 / 1e3, p99 / 1e3);
    }
    Ok(())
}

/// One run of `case` with a model of its own: the time from `chat` to the verified receipt.
async fn one(
    case: Case,
    model: &str,
    bootstrap: &[Multiaddr],
    data: &Path,
) -> anyhow::Result<Duration> {
    let (key, fallback_key) = (NodeKey::generate(), NodeKey::generate());
    let fallback = start(&fallback_key, model, bootstrap, 5, &data.join("fallback")).await?;
    let first = start(&key, model, bootstrap, 1, &data.join("first")).await?;
    let config =
        ClientConfig { directory_ttl: Duration::from_secs(3600), ..ClientConfig::default() }
            .bootstrap(bootstrap.to_vec())
            .strategy(Strategy::Cheapest);
    let client = Client::connect(NodeKey::generate(), config).await?;
    wait_for(|| async { client.refresh().await.is_ok() && lists(&client, model, 2).await }).await?;
    let mut running = vec![fallback];
    match case {
        Case::Live => running.push(first),
        Case::Gone => stop(first).await?,
        Case::Moved => {
            stop(first).await?;
            let again = start(&key, model, bootstrap, 1, &data.join("again")).await?;
            let now_at = tcp_ports(&again.listen_addrs().await?);
            let config = ClientConfig::default().bootstrap(bootstrap.to_vec());
            let observer = Client::connect(NodeKey::generate(), config).await?;
            wait_for(|| async {
                observer.refresh().await.is_ok()
                    && observer
                        .take_directory()
                        .await
                        .candidates(model)
                        .iter()
                        .any(|c| c.address == key.address() && tcp_ports(&c.addrs) == now_at)
            })
            .await?;
            running.push(again);
        }
    }
    let started = Instant::now();
    let receipt = client
        .chat(lloom_client::ChatRequest::user(model, "Capital of France?"))
        .await?
        .collect()
        .await?;
    let took = started.elapsed();
    let expected = if case == Case::Gone { fallback_key.address() } else { key.address() };
    ensure!(
        receipt.executor == expected,
        "{case:?}: answered by {} after {:?}",
        receipt.executor,
        receipt.attempts
    );
    for node in running {
        node.shutdown().await?;
    }
    Ok(took)
}

/// Whether `client`'s directory lists `count` executors of `model`.
async fn lists(client: &Client, model: &str, count: usize) -> bool {
    client
        .models()
        .await
        .is_ok_and(|rows| rows.iter().any(|r| r.model == model && r.executors == count))
}

/// Starts an executor of `model` at `price` wei per input token, answering at once.
async fn start(
    key: &NodeKey,
    model: &str,
    bootstrap: &[Multiaddr],
    price: u64,
    data: &Path,
) -> anyhow::Result<ExecutorNode> {
    let mut config = ExecutorConfig::new(data.to_path_buf());
    config.network = NetworkConfig { bootstrap: bootstrap.to_vec(), ..NetworkConfig::local() };
    let offer = ModelOffer {
        price_per_input_token: U256::from(price),
        price_per_output_token: U256::from(price * 2),
        ..crate::net::offer(model)
    };
    let backend = Arc::new(ScriptedBackend::new(Script::answer(model, "Paris.")));
    Ok(ExecutorNode::start(key, vec![ServedModel { offer, backend }], config).await?)
}

/// Shuts `node` down and waits until its ports refuse connections.
async fn stop(node: ExecutorNode) -> anyhow::Result<()> {
    let ports = tcp_ports(&node.listen_addrs().await?);
    node.shutdown().await?;
    wait_for(|| async { !ports.iter().any(|p| TcpStream::connect(p).is_ok()) })
        .await
        .context("the executor's ports stayed open")
}

/// The loopback TCP ports in `addrs`.
fn tcp_ports(addrs: &[Multiaddr]) -> Vec<SocketAddr> {
    let port = |a: &Multiaddr| {
        a.iter().find_map(|p| if let Protocol::Tcp(n) = p { Some(n) } else { None })
    };
    addrs.iter().filter_map(port).map(|n| SocketAddr::from(([127, 0, 0, 1], n))).collect()
}

/// Polls `done` every 10 ms for at most [`LIMIT`].
async fn wait_for<F: std::future::Future<Output = bool>>(
    mut done: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + LIMIT;
    while !done().await {
        if Instant::now() > deadline {
            bail!("not done within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
