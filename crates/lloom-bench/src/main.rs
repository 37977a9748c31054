//! `lloom-bench`: end-to-end benchmarks of a local Lloom network (see the book's benchmark
//! chapter for the figures and how to read them).
//!
//! ```text
//! cargo run --release -p lloom-bench -- overhead     # P1: signed round trip vs direct HTTP
//! cargo run --release -p lloom-bench -- streaming    # P2: time to first token, network vs direct
//! cargo run --release -p lloom-bench -- throughput   # P3: signed requests/s vs signature ceiling
//! cargo run --release -p lloom-bench -- load         # R1: 1,000 concurrent requests
//! cargo run --release -p lloom-bench -- soak         # 100,000 requests, RSS start/end (--warmup 150000: caches full first)
//! cargo run --release -p lloom-bench -- discovery    # executor start → visible (registry, DHT)
//! cargo run --release -p lloom-bench -- failover     # first choice gone or moved → answer
//! ```

// A benchmark binary reports on stdout; counts become floats for rates.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

/// The nodes' allocator (see their binaries), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod discovery;
mod failover;
mod load;
mod net;
mod overhead;
mod soak;
mod streaming;
mod throughput;
mod wakeup;

use clap::{Parser, Subcommand};

/// End-to-end benchmarks of a local Lloom network.
#[derive(Parser, Debug)]
#[command(name = "lloom-bench", version)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// P1: latency of a signed round trip through an executor with an instant backend, next
    /// to a direct HTTP call to an instant OpenAI-compatible server.
    Overhead {
        /// Measured requests of each kind.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// The client keeps every verified receipt in a store on disk, as the CLI and the
        /// gateway do.
        #[arg(long)]
        client_receipts: bool,
    },
    /// P2: time to first token through the network vs directly from the same engine.
    Streaming {
        /// Measured requests of each kind (a 1 ms difference needs about 100 to show).
        #[arg(long, default_value_t = 100)]
        requests: usize,
    },
    /// P3: signed requests per second through one executor with an instant backend.
    Throughput {
        /// Concurrent requests.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The executor's receipt commit delay, in microseconds [default: the executor's].
        #[arg(long, value_name = "US")]
        commit_delay_us: Option<u64>,
        /// The client keeps every verified receipt in a store on disk, as the CLI and the
        /// gateway do.
        #[arg(long)]
        client_receipts: bool,
    },
    /// R1: many concurrent requests against one executor; each must end verified or Busy.
    Load {
        /// Requests in flight at once.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Times each request waits out a Busy answer and asks again, as `lloom-client chat`
        /// does (0: R1 as specified, each request ends verified or Busy).
        #[arg(long, default_value_t = 0)]
        retries: u32,
    },
    /// Time from an executor's start until a client sees it, via a validator and via the DHT.
    Discovery {
        /// Executor starts measured.
        #[arg(long, default_value_t = 30)]
        runs: usize,
    },
    /// Time to a verified answer when the executor chosen first went away or moved, next to
    /// when it is live.
    Failover {
        /// Runs of each case.
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Queue soak: many requests through one executor; RSS at start and end.
    Soak {
        /// Requests in total.
        #[arg(long, default_value_t = 100_000)]
        requests: usize,
        /// Requests before the start RSS is read (enough to fill the page caches: 150,000).
        #[arg(long, default_value_t = 2000)]
        warmup: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lloom_core::cli::init_logging();
    let bench = Cli::parse().bench;
    // Figures compare only between runs on the same kind of CPU.
    println!("host: {}", lloom_executor::bench::describe_host());
    if matches!(bench, Bench::Overhead { .. } | Bench::Throughput { .. } | Bench::Streaming { .. })
    {
        println!("{}", wakeup::describe());
    }
    match bench {
        Bench::Overhead { requests, client_receipts } => {
            overhead::run(requests, client_receipts).await
        }
        Bench::Streaming { requests } => streaming::run(requests).await,
        Bench::Throughput { concurrency, seconds, commit_delay_us, client_receipts } => {
            throughput::run(concurrency, seconds, commit_delay_us, client_receipts).await
        }
        Bench::Load { requests, retries } => load::run(requests, retries).await,
        Bench::Soak { requests, warmup, concurrency } => {
            soak::run(requests, warmup, concurrency).await
        }
        Bench::Discovery { runs } => discovery::run(runs).await,
        Bench::Failover { runs } => failover::run(runs).await,
    }
}
