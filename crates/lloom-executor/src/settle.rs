//! The settlement loop: unsettled receipts from the durable store, batched by client, submitted
//! to the settlement contract; a receipt leaves the unsettled set only after its transaction is
//! confirmed (settled, already settled, or refused for good). Receipts the contract may accept
//! later (the client's escrow is short) stay pending. After a failure (RPC unreachable, a
//! reverted transaction) the loop backs off and tries again; nothing is lost across restarts
//! because the store is the source of truth, and nothing is paid twice because the contract
//! settles each request once.

use std::collections::BTreeMap;
use std::time::Duration;

use lloom_core::chain::{Settlement, receipt_call_data};
use lloom_core::verify;
use lloom_core::{Address, DomainConfig, U256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::serve::{Receipt, ReceiptStore, Server};

/// The contract's rejection codes (see `LloomSettlement.Rejection`).
mod rejection {
    /// Already settled: as good as settled for us.
    pub(super) const ALREADY_SETTLED: u8 = 8;
    /// The client's escrow is short: may succeed after a deposit.
    pub(super) const INSUFFICIENT_ESCROW: u8 = 9;
}

/// How the loop runs.
#[derive(Clone, Copy, Debug)]
pub struct SettlerConfig {
    /// Most receipts per transaction.
    pub batch_size: usize,
    /// Time between rounds when all went well.
    pub interval: Duration,
    /// Longest wait after failures (the wait doubles from `interval / 4`).
    pub max_backoff: Duration,
    /// Longest the last round, once stopped, may take (zero: no last round). It submits the
    /// receipts made since the round before, so an executor stopped for good is paid for them
    /// without being started again.
    pub final_round: Duration,
}

impl Default for SettlerConfig {
    fn default() -> Self {
        Self {
            batch_size: 100,
            interval: Duration::from_secs(60),
            max_backoff: Duration::from_secs(600),
            final_round: Duration::from_secs(30),
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Transactions sent.
    pub transactions: usize,
    /// Receipts settled now.
    pub settled: usize,
    /// Receipts the contract had settled before.
    pub already_settled: usize,
    /// Receipts refused for good.
    pub rejected: usize,
    /// Receipts left pending (the client's escrow is short).
    pub pending: usize,
    /// Wei earned in this round.
    pub earned: U256,
}

/// Rejection code recorded for receipts refused by the local checks (never sent).
pub const REJECTED_LOCALLY: u8 = 100;

/// The contract's rules, checked before anything is sent: both signatures for the contract's
/// domain (chain id and address), the binding of response to request, token limits, the exact
/// cost, and a response timestamped no later than the deadline plus 30 s.
pub fn check_receipt(receipt: &Receipt, domain: &DomainConfig) -> lloom_core::Result<()> {
    let (request, response) = (&receipt.request, &receipt.response);
    let q = &request.commitment;
    let r = &response.commitment;
    let request_digest = request.digest();
    verify::check_origin(
        domain,
        &request.domain,
        &request_digest,
        &request.signature,
        q.client,
        None,
    )?;
    verify::check_request_hash(request)?;
    let response_digest = response.digest();
    verify::check_origin(
        domain,
        &response.domain,
        &response_digest,
        &response.signature,
        r.executor,
        None,
    )?;
    verify::check_binding(r, q, &request_digest)?;
    verify::check_token_limits(r, q)?;
    verify::check_cost(r, q)?;
    if r.timestamp > q.deadline.saturating_add(30) {
        return Err(lloom_core::Error::DeadlinePassed { deadline: q.deadline, now: r.timestamp });
    }
    Ok(())
}

/// Settles every unsettled receipt once (one transaction per client and batch). Receipts that
/// fail [`check_receipt`] for the contract's domain are recorded as rejected and never sent.
pub async fn settle_pending(
    store: &ReceiptStore,
    chain: &Settlement,
    batch_size: usize,
) -> Result<SettleReport> {
    let batch_size = batch_size.max(1);
    let mut report = SettleReport::default();
    let domain =
        DomainConfig { chain_id: chain.chain_id().await?, verifying_contract: chain.address() };
    let mut by_client: BTreeMap<Address, Vec<Receipt>> = BTreeMap::new();
    let mut refused_locally = Vec::new();
    // Bounded per round: at most this many receipts are read and submitted.
    for receipt in store.unsettled(batch_size * 100)? {
        match check_receipt(&receipt, &domain) {
            Ok(()) => by_client.entry(receipt.request.commitment.client).or_default().push(receipt),
            Err(e) => {
                tracing::warn!(digest = %receipt.digest(), "receipt refused before sending: {e}");
                refused_locally.push((receipt.digest(), REJECTED_LOCALLY));
            }
        }
    }
    report.rejected += refused_locally.len();
    store.mark_rejected(&refused_locally)?;
    for receipts in by_client.values() {
        for batch in receipts.chunks(batch_size) {
            let calls = batch.iter().map(|r| receipt_call_data(&r.request, &r.response)).collect();
            let outcome = chain.settle(calls).await?;
            report.transactions += 1;
            report.settled += outcome.settled.len();
            report.earned += outcome.total;
            store.mark_settled(&outcome.settled)?;
            let mut done = Vec::new();
            let mut refused = Vec::new();
            for (digest, reason) in outcome.rejected {
                match reason {
                    rejection::ALREADY_SETTLED => done.push(digest),
                    rejection::INSUFFICIENT_ESCROW => report.pending += 1,
                    _ => refused.push((digest, reason)),
                }
            }
            report.already_settled += done.len();
            report.rejected += refused.len();
            store.mark_settled(&done)?;
            store.mark_rejected(&refused)?;
        }
    }
    Ok(report)
}

/// How the settler's last round, once stopped, went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalRound {
    /// Not run ([`SettlerConfig::final_round`] is zero).
    Skipped,
    /// It ran to the end.
    Done(SettleReport),
    /// It failed (the chain unreachable, a transaction reverted); the receipts stay for the
    /// next start.
    Failed(String),
    /// It took longer than [`SettlerConfig::final_round`] and was cut; the receipts not
    /// confirmed stay for the next start.
    TimedOut,
}

/// Runs [`settle_pending`] on `server`'s receipts every `interval` (backing off after
/// failures) until `stop`, then once more (at most [`SettlerConfig::final_round`]); the
/// handle gives how that last round went. Await it before the server's store is closed.
pub fn spawn_settler(
    server: Server,
    chain: Settlement,
    config: SettlerConfig,
    stop: CancellationToken,
) -> JoinHandle<FinalRound> {
    tokio::spawn(async move {
        let mut wait = config.interval;
        loop {
            match settle_pending(server.receipts(), &chain, config.batch_size).await {
                Ok(report) => {
                    if report.transactions > 0 {
                        tracing::info!(?report, "settled receipts");
                    }
                    wait = config.interval;
                }
                Err(e) => {
                    wait = (wait * 2).min(config.max_backoff).max(config.interval / 4);
                    tracing::warn!("settlement failed, retrying in {wait:?}: {e}");
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        if config.final_round.is_zero() {
            return FinalRound::Skipped;
        }
        let last = settle_pending(server.receipts(), &chain, config.batch_size);
        let last = match tokio::time::timeout(config.final_round, last).await {
            Ok(Ok(report)) => FinalRound::Done(report),
            Ok(Err(e)) => FinalRound::Failed(e.to_string()),
            Err(_) => FinalRound::TimedOut,
        };
        tracing::info!(?last, "the last settlement round before stopping");
        last
    })
}
