//! R1: many concurrent requests against one executor whose backend holds 64 at a time: every
//! request must end in a verified answer or an explicit Busy; none lost, none hung.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::{ChatRequest, Error};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};

use crate::net::{self, MODEL};

/// Clients sharing the load (each its own connection to the executor).
const CLIENTS: usize = 10;

pub(crate) async fn run(requests: usize) -> anyhow::Result<()> {
    let script = Script {
        delay: Duration::from_millis(5),
        capacity: 64,
        ..Script::answer(MODEL, &"word ".repeat(20))
    };
    let network = net::start(vec![Arc::new(ScriptedBackend::new(script))], 32).await?;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(network.client().await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..requests {
        let client =
            clients.get(i % CLIENTS).cloned().ok_or_else(|| anyhow::anyhow!("no client"))?;
        tasks.push(tokio::spawn(async move {
            let request =
                ChatRequest { timeout: Duration::from_secs(60), ..ChatRequest::user(MODEL, "hi") };
            match client.chat(request).await {
                Ok(answer) => answer.collect().await.map(|_| ()),
                Err(e) => Err(e),
            }
        }));
    }
    let (mut verified, mut busy, mut other) = (0, 0, Vec::new());
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(120), task).await {
            Ok(Ok(Ok(()))) => verified += 1,
            Ok(Ok(Err(Error::AllBusy { .. }))) => busy += 1,
            Ok(Ok(Err(e))) => other.push(e.to_string()),
            Ok(Err(e)) => other.push(format!("task failed: {e}")),
            Err(_) => other.push("hung for 120 s".into()),
        }
    }
    println!(
        "R1 load: {requests} concurrent requests, one executor holding 64 at a time, {CLIENTS} clients"
    );
    println!("  verified answers : {verified}");
    println!("  explicit Busy    : {busy}");
    println!("  anything else    : {} {:?}", other.len(), other.iter().take(3).collect::<Vec<_>>());
    println!("  wall time        : {:.2} s", start.elapsed().as_secs_f64());
    anyhow::ensure!(other.is_empty(), "some requests were lost or hung");
    Ok(())
}
