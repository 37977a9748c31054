//! R1: many concurrent requests against one executor whose backend holds 64 at a time: every
//! request must end in a verified answer or an explicit Busy; none lost, none hung. With
//! retries, each request waits out the Busy answers as `lloom-client chat` does (the signed
//! retry-after, with jitter) and asks again, up to that many times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_client::patience::Patience;
use lloom_client::{ChatRequest, Client, Error};
use lloom_executor::backend::scripted::{Script, ScriptedBackend};

use crate::net::{self, MODEL};

/// Clients sharing the load (each its own connection to the executor).
const CLIENTS: usize = 10;

/// Seconds for each request, waits included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) async fn run(requests: usize, retries: u32) -> anyhow::Result<()> {
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
        tasks.push(tokio::spawn(patiently(client, retries)));
    }
    let (mut verified, mut busy, mut other) = (0, 0, Vec::new());
    let (mut waited, mut waits, mut last_answer) = (0, 0, Duration::ZERO);
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(120), task).await {
            Ok(Ok(Ok((waits_taken, took)))) => {
                verified += 1;
                waited += usize::from(waits_taken > 0);
                waits += waits_taken;
                last_answer = last_answer.max(took);
            }
            Ok(Ok(Err(Error::AllBusy { .. }))) => busy += 1,
            Ok(Ok(Err(e))) => other.push(e.to_string()),
            Ok(Err(e)) => other.push(format!("task failed: {e}")),
            Err(_) => other.push("hung for 120 s".into()),
        }
    }
    println!(
        "R1 load: {requests} concurrent requests, one executor holding 64 at a time, {CLIENTS} clients, {retries} retries each"
    );
    println!("  verified answers : {verified}");
    if retries > 0 {
        println!("    after waiting  : {waited} ({waits} waits in all)");
        println!("    the last at    : {:.2} s", last_answer.as_secs_f64());
    }
    println!("  explicit Busy    : {busy}");
    println!("  anything else    : {} {:?}", other.len(), other.iter().take(3).collect::<Vec<_>>());
    println!("  wall time        : {:.2} s", start.elapsed().as_secs_f64());
    anyhow::ensure!(other.is_empty(), "some requests were lost or hung");
    Ok(())
}

/// One request, waiting out Busy answers up to `retries` times; the waits it took, and when it
/// was answered.
async fn patiently(client: Client, retries: u32) -> lloom_client::Result<(u32, Duration)> {
    let start = Instant::now();
    let mut patience = Patience::new(retries, REQUEST_TIMEOUT, start);
    let mut waits = 0;
    loop {
        let request = ChatRequest {
            timeout: patience.left(Instant::now()),
            waited_out_busy: waits > 0,
            ..ChatRequest::user(MODEL, "hi")
        };
        let outcome = match client.chat(request).await {
            Ok(answer) => answer.collect().await,
            Err(e) => Err(e),
        };
        let Err(error) = outcome else { return Ok((waits, start.elapsed())) };
        let Some(wait) = patience.after(&error, Instant::now()) else { return Err(error) };
        waits += 1;
        wait.pass(&client, MODEL).await;
    }
}
