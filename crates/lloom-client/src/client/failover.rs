//! One chat's failover loop: rank the candidates, sign for the best, run the attempt, and on
//! failure cool the executor down (or, for a request too long for its context, ask only
//! longer contexts), try it again where it moved, or go on to the next, within the deadline.
//! When every executor left is cooling down after failures, the one whose cooldown ends first
//! is tried anyway, once ([`LastResort`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lloom_core::{Address, ErrorCode, FinishReason, RequestBody, U256};
use tokio::sync::mpsc;

use super::Client;
use super::density::PromptDensity;
use super::room::{OutputPlan, PromptSize};
use crate::attempt::{self, AttemptFailure, AttemptLimits, Links};
use crate::chat::{AttemptReport, ChatEvent, ChatRequest, Receipt, response_checks};
use crate::chat_cost::{ChatCost, OpenCheckpoint};
use crate::directory::Candidate;
use crate::error::{Error, Result};
use crate::routing::LastResort;

/// Longest wait for validators' current addresses of an executor its listed ones failed to reach.
const READDRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The most a request to `executor` for `max_output` tokens can cost: both token limits at its
/// prices.
fn worst_case_cost(max_output: u32, executor: &Candidate) -> U256 {
    let max_output = u64::from(max_output);
    let max_input = u64::from(executor.offer.context_length).saturating_sub(max_output);
    lloom_core::verify::compute_cost(
        max_input,
        max_output,
        executor.offer.price_per_input_token,
        executor.offer.price_per_output_token,
    )
    .unwrap_or(U256::MAX)
}

/// Keeps in `longest` the refusal of the longest context seen (the one the user is told of).
fn keep_longest(longest: &mut Option<(u32, String)>, context: u32, reason: String) {
    if longest.as_ref().is_none_or(|(seen, _)| context >= *seen) {
        *longest = Some((context, reason));
    }
}

impl Client {
    /// Learns from a verified answer to `request` how densely its model's prompts are counted
    /// (a count the executor clamped to the signed limit only makes a later estimate too low,
    /// which a refusal with the count corrects, as without learning).
    fn learn_density(&self, request: &ChatRequest, input_tokens: u64) {
        let size = PromptSize::of(&request.messages);
        let Some(tenths) = PromptDensity::observed(size, input_tokens) else { return };
        self.inner.prompt_density.record(&request.model, tenths);
    }

    pub(super) async fn run_chat(
        &self,
        request: ChatRequest,
        body: RequestBody,
        mut candidates: Vec<Candidate>,
        events: &mpsc::Sender<Result<ChatEvent>>,
        cost: &Arc<ChatCost>,
    ) -> Result<Receipt> {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = started + request.timeout;
        let mut tried: Vec<Address> = Vec::new();
        // Executors tried again at the addresses they announce now (once each).
        let mut readdressed: Vec<Address> = Vec::new();
        let mut reports: Vec<AttemptReport> = Vec::new();
        let mut busy_retry_after: Option<Duration> = None;
        // Whether a cooling executor was tried, as the last one left (once per request).
        let mut probed = false;
        // Whether a busy executor was asked at the time it gave this request (once).
        let mut kept_appointment = !request.waited_out_busy;
        let (mut over_escrow, mut escrow_seen) = (None, U256::ZERO);
        // Raised above each executor whose context the request exceeded: only a longer one
        // can serve it.
        let mut filter = request.filter;
        let mut context_refusal: Option<(u32, String)> = None;
        // Only a chat fitted to the context estimates its prompt.
        let learned =
            request.fit_to_context.then(|| inner.prompt_density.tenths_per_token(&request.model));
        let mut plan = OutputPlan::new(&request, learned.flatten());
        // The output limit of the last request signed.
        let mut asked: Option<u32> = None;
        let mut attempts = 0;
        while attempts < inner.config.max_attempts.max(1) {
            if Instant::now() >= deadline {
                break;
            }
            let ranked = {
                let mut router = inner.router.lock().await;
                let strategy = request.strategy.unwrap_or_else(|| router.strategy());
                router.rank_by(strategy, candidates.clone(), &filter, &tried, Instant::now())
            };
            let preferred = ranked.iter().position(|c| Some(c.address) == request.prefer);
            let executor = match ranked.into_iter().nth(preferred.unwrap_or(0)) {
                Some(executor) => executor,
                // Every untried executor is cooling down: the way out, if there is one.
                None => match inner.router.lock().await.last_resort(
                    &candidates,
                    &filter,
                    &tried,
                    Instant::now(),
                ) {
                    LastResort::Probe(executor) if !probed => {
                        probed = true;
                        tracing::info!(executor = %executor.address, "every executor left is cooling down after failures: trying the one whose cooldown ends first");
                        *executor
                    }
                    LastResort::Busy { due_first, .. } if !kept_appointment => {
                        kept_appointment = true;
                        tracing::debug!(executor = %due_first.address, "this request waited out its retry-after: asking the busy executor due first");
                        *due_first
                    }
                    LastResort::Busy { retry_after, .. } => {
                        busy_retry_after =
                            Some(busy_retry_after.map_or(retry_after, |b| b.min(retry_after)));
                        break;
                    }
                    LastResort::Probe(_) | LastResort::Nothing => break,
                },
            };
            tried.push(executor.address);
            let context = executor.offer.context_length;
            let max_output = match plan.output_tokens(context) {
                Ok(max_output) => max_output,
                Err(reason) => {
                    // It would refuse at once (signed ContextExceeded): not asked.
                    filter = filter.above_context(context);
                    keep_longest(&mut context_refusal, context, reason);
                    continue;
                }
            };
            if let Some(guard) = &inner.config.escrow_guard {
                let worst = worst_case_cost(max_output, &executor);
                let escrow = guard.escrow().await?;
                if worst > escrow {
                    over_escrow = Some(over_escrow.map_or(worst, |w: U256| w.min(worst)));
                    escrow_seen = escrow;
                    continue;
                }
            }
            let signed = self.sign(&request.model, max_output, &body, &executor, deadline)?;
            asked = Some(max_output);
            if events.send(Ok(ChatEvent::Attempt { executor: executor.address })).await.is_err() {
                return Err(Error::State("the answer was dropped".into()));
            }
            attempts += 1;
            let limits = AttemptLimits {
                idle: inner.config.idle_timeout,
                connect: inner.config.connect_timeout,
                deadline,
            };
            let links = Links { network: &inner.network, streams: &inner.streams };
            let attempt_started = Instant::now();
            let mut open = OpenCheckpoint::new(cost, self);
            let policy = &inner.config.policy;
            let outcome =
                attempt::run(&links, &executor, &signed, policy, limits, events, &mut open).await;
            match outcome {
                Ok(answer) => {
                    // The final response supersedes the checkpoints (same request digest).
                    drop(open.close());
                    let c = &answer.response.commitment;
                    cost.attempt_ended(c.totalCost);
                    let tokens_per_sec = c.outputTokens as f64
                        / answer.elapsed.saturating_sub(answer.ttft).as_secs_f64().max(1e-3);
                    inner.router.lock().await.record_success(
                        executor.address,
                        answer.ttft,
                        tokens_per_sec,
                    );
                    reports.push(AttemptReport {
                        executor: executor.address,
                        failure: None,
                        cooldown: None,
                    });
                    self.keep(signed.request(), &answer.response, Some(&answer.text)).await;
                    self.learn_density(&request, c.inputTokens);
                    return Ok(Receipt {
                        executor: executor.address,
                        peer: executor.peer,
                        input_tokens: c.inputTokens,
                        output_tokens: c.outputTokens,
                        cost: c.totalCost,
                        finish: FinishReason::from_code(c.finishReason)?,
                        ttft: answer.ttft,
                        text: answer.text,
                        request: signed.into_request(),
                        response: answer.response,
                        checks: response_checks(&request.sampling.format),
                        attempts: reports,
                    });
                }
                Err(failed) => {
                    if matches!(failed.failure, AttemptFailure::Unreachable(_))
                        && !readdressed.contains(&executor.address)
                        && let Some(current) = self
                            .moved_elsewhere(&executor, &request.model, attempt_started, deadline)
                            .await
                    {
                        // Not the executor's fault: it is tried again where it is now.
                        tracing::info!(executor = %executor.address, "unreachable at the addresses listed before; trying those it announces now");
                        readdressed.push(executor.address);
                        tried.retain(|a| *a != executor.address);
                        candidates.retain(|c| c.address != executor.address);
                        candidates.push(current);
                        let failure = Some(failed.failure);
                        reports.push(AttemptReport {
                            executor: executor.address,
                            failure,
                            cooldown: None,
                        });
                        continue;
                    }
                    if matches!(failed.failure, AttemptFailure::Unreachable(_)) {
                        // Found through the DHT, perhaps, and gone since: not carried into the
                        // next directories (a later lookup finds it again if it is back).
                        inner.dht_finds.lock().await.forget(&executor.address);
                    }
                    if let AttemptFailure::Refused {
                        code: ErrorCode::ContextExceeded,
                        message,
                        ..
                    } = &failed.failure
                    {
                        // The request's size, not the executor's fault: no cooldown, and no
                        // attempt used up (each such refusal either assumes a longer prompt,
                        // a bounded number of times, or raises the context asked for, so the
                        // loop still ends).
                        attempts -= 1;
                        if plan.assume_longer_prompt(message) {
                            tracing::info!(executor = %executor.address, context, "the prompt is longer than estimated; asking again for fewer output tokens: {message}");
                            tried.retain(|a| *a != executor.address);
                        } else {
                            tracing::info!(executor = %executor.address, context, "the request does not fit this executor's context: {message}");
                            filter = filter.above_context(context);
                            keep_longest(&mut context_refusal, context, message.clone());
                        }
                        reports.push(AttemptReport {
                            executor: executor.address,
                            failure: Some(failed.failure),
                            cooldown: None,
                        });
                        continue;
                    }
                    let reason = failed.failure.to_string();
                    tracing::info!(executor = %executor.address, "attempt failed: {reason}");
                    // A refusal no executor would answer otherwise (an invalid request, such as
                    // a JSON schema that cannot be compiled) is the request's fault: the
                    // executor is not cooled down for it, so the next request still finds it.
                    let retryable = failed.failure.is_retryable();
                    let cooldown = if let AttemptFailure::Refused {
                        code: ErrorCode::Busy | ErrorCode::RateLimited,
                        retry_after,
                        ..
                    } = failed.failure
                    {
                        // Not a failure: left alone for as long as it signed (within bounds).
                        let mut router = inner.router.lock().await;
                        let cooldown = router.record_busy(
                            executor.address,
                            retry_after,
                            &reason,
                            Instant::now(),
                        );
                        busy_retry_after =
                            Some(busy_retry_after.map_or(cooldown, |b| b.min(cooldown)));
                        Some(cooldown)
                    } else if retryable {
                        let mut router = inner.router.lock().await;
                        Some(router.record_failure(executor.address, &reason, Instant::now()))
                    } else {
                        None
                    };
                    // The executor can settle what it streamed: its checkpoint is kept now,
                    // whether or not another executor answers.
                    let mut paid = U256::ZERO;
                    if let Some(cp) = failed.checkpoint {
                        tracing::info!(executor = %executor.address, tokens = cp.commitment.outputTokens, "kept the last verified checkpoint of a broken stream");
                        self.keep(signed.request(), &cp, None).await;
                        paid = cp.commitment.totalCost;
                    }
                    // Kept above: until then, a chat cancelled meanwhile keeps it from the guard.
                    drop(open.close());
                    cost.attempt_ended(paid);
                    reports.push(AttemptReport {
                        executor: executor.address,
                        failure: Some(failed.failure.clone()),
                        cooldown,
                    });
                    if failed.streamed {
                        let restart = ChatEvent::Restart { reason: reason.clone(), cost: paid };
                        let _ = events.send(Ok(restart)).await;
                    }
                    if !retryable {
                        return Err(Error::Refused { executor: executor.address, reason });
                    }
                }
            }
        }
        if reports.is_empty()
            && let Some(needed) = over_escrow
        {
            return Err(Error::InsufficientEscrow { needed, escrow: escrow_seen });
        }
        // A try at addresses an executor had left (no cooldown) is not a refusal of its own.
        if let Some(retry_after) = busy_retry_after
            && reports.iter().filter(|r| r.cooldown.is_some()).all(|r| {
                matches!(
                    r.failure,
                    Some(AttemptFailure::Refused {
                        code: ErrorCode::Busy | ErrorCode::RateLimited,
                        ..
                    })
                )
            })
        {
            return Err(Error::AllBusy { retry_after });
        }
        // Every executor that answered found the request too long for its context.
        if let Some((context_length, reason)) = context_refusal
            && reports.iter().all(|r| {
                r.cooldown.is_none()
                    && matches!(
                        r.failure,
                        Some(AttemptFailure::Refused { code: ErrorCode::ContextExceeded, .. })
                            | Some(AttemptFailure::Unreachable(_))
                    )
            })
        {
            return Err(Error::ContextExceeded {
                model: request.model,
                context_length,
                // A chat fitted to the context and never asked: the fewest it would take.
                max_tokens: asked.unwrap_or(if request.fit_to_context {
                    request.min_tokens.clamp(1, request.max_tokens.max(1))
                } else {
                    request.max_tokens
                }),
                reason,
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::DeadlineExceeded(request.timeout));
        }
        Err(Error::AllFailed {
            model: request.model,
            attempts: reports
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r.executor,
                        r.failure.as_ref().map(ToString::to_string).unwrap_or_default()
                    )
                })
                .collect(),
        })
    }

    /// The executor's entry in a directory fetched after `since` (fetched now if need be, for
    /// at most [`READDRESS_TIMEOUT`]) when it lists other addresses than `stale`: the executor
    /// restarted elsewhere, or announces a relayed address since AutoNAT found it private.
    async fn moved_elsewhere(
        &self,
        stale: &Candidate,
        model: &str,
        since: Instant,
        deadline: Instant,
    ) -> Option<Candidate> {
        let fetched = self.inner.directory.lock().await.1;
        // Attempts that failed together share the first one's fetch.
        if fetched.is_none_or(|t| t < since) {
            let wait = READDRESS_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, self.refresh()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::debug!(%error, "no fresh addresses: the directory did not refresh");
                    return None;
                }
                Err(_) => return None,
            }
        }
        let directory = self.inner.directory.lock().await;
        let current =
            directory.0.candidates(model).into_iter().find(|c| c.address == stale.address)?;
        (current.addrs != stale.addrs).then_some(current)
    }
}
