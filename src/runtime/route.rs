//! Fault routing: the move an attempt's outcome calls for, by DESIGN §4's table.
//!
//! | outcome or fault | move |
//! |---|---|
//! | done | `succeeded` with the output |
//! | wait | `waiting_external` (a pipeline run's wait on its stages is no failed attempt) |
//! | review | `needs_review` |
//! | transient (L1) | `failed_transient` with a jittered backoff; `failed_permanent` after `max_attempts` |
//! | resource (L2) | `cleanup`, then `failed_transient` with the cooldown; `needs_review` after the budget |
//! | logic (L3) | `needs_review` (a pipeline compensates first) |
//! | permanent | `failed_permanent` (dead letter) |
//! | unknown | one short retry, then `failed_permanent` |

use std::time::Duration;

use super::{Registered, Shared};
use crate::agent::{Context, Outcome};
use crate::fault::{AgentError, Fault};
use crate::lifecycle::{RunId, RunState};
use crate::store::{Actor, HistoryEntry, RunRecord, Transition};

// The moves this module makes, proven against the lifecycle table.
/// The move the attempt's outcome calls for, by the fault table (a resource fault's
/// `cleanup` runs here, in the attempt's slot).
pub(super) async fn route(
    shared: &Shared,
    registered: &Registered,
    run: &RunRecord,
    token: u64,
    ctx: &Context,
    result: Result<Outcome<serde_json::Value>, AgentError>,
) -> Transition {
    let policy = registered.agent.retry_policy();
    if let Some(breaker) = &registered.breaker {
        breaker.record(result.as_ref().err().map(AgentError::fault));
    }
    let base = |t: Transition| t.fenced(token).by(Actor::Worker(shared.worker_id.clone()));
    match result {
        Ok(Outcome::Done(output)) => {
            base(checked_move!(run.id, Processing => Succeeded)).output(output).reason("done")
        }
        Ok(Outcome::Wait(wait)) => {
            let mut t = base(checked_move!(run.id, Processing => WaitingExternal))
                .waiting_for(wait.signal.clone())
                .reason(format!("waiting for signal `{}`", wait.signal));
            if registered.kind().wait_refunds_attempt {
                // A pipeline run waits on its stages once per stage: that is progress, not a
                // failed attempt, so it does not use up its retry budget.
                t = t.refund_attempt();
            }
            if let Some(timeout) = wait.timeout {
                t = t.due_in(timeout);
            }
            t
        }
        Ok(Outcome::Review(reason)) => {
            base(checked_move!(run.id, Processing => NeedsReview)).reason(reason)
        }
        Err(error) => {
            let info = error.to_info();
            match error.fault() {
                Fault::Transient if run.attempt >= policy.max_attempts => {
                    base(checked_move!(run.id, Processing => FailedPermanent))
                        .error(info)
                        .reason(format!("gave up after {} attempts: {error}", run.attempt))
                }
                Fault::Transient => {
                    let backoff = policy.backoff_delay(
                        run.attempt,
                        &mut shared.rng.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    let delay = backoff.max(error.retry_after_delay().unwrap_or_default());
                    let (delay, why) = breaker_wait(shared, registered, delay);
                    base(checked_move!(run.id, Processing => FailedTransient))
                        .due_in(delay)
                        .error(info)
                        .reason(format!("transient fault, {why}: {error}"))
                }
                Fault::Resource => {
                    registered.agent.cleanup(ctx, &error).await;
                    let earlier = faults_in_history(shared, run.id, Fault::Resource).await;
                    if earlier + 1 >= policy.resource_budget {
                        base(checked_move!(run.id, Processing => NeedsReview)).error(info).reason(
                            format!(
                                "resource fault {} times; paused until manual cleanup: {error}",
                                earlier + 1
                            ),
                        )
                    } else {
                        base(checked_move!(run.id, Processing => FailedTransient))
                            .due_in(policy.resource_cooldown)
                            .error(info)
                            .reason(format!(
                                "resource fault, cooling down {} ms: {error}",
                                policy.resource_cooldown.as_millis()
                            ))
                    }
                }
                Fault::Logic => base(checked_move!(run.id, Processing => NeedsReview))
                    .error(info)
                    .reason(format!("logic fault: {error}")),
                Fault::Permanent => base(checked_move!(run.id, Processing => FailedPermanent))
                    .error(info)
                    .reason(format!("permanent fault: {error}")),
                _ => {
                    if faults_in_history(shared, run.id, Fault::Unknown).await == 0 {
                        base(checked_move!(run.id, Processing => FailedTransient))
                            .due_in(policy.unknown_retry_delay)
                            .error(info)
                            .reason(format!(
                                "unknown fault, one retry in {} ms: {error}",
                                policy.unknown_retry_delay.as_millis()
                            ))
                    } else {
                        base(checked_move!(run.id, Processing => FailedPermanent))
                            .error(info)
                            .reason(format!("unknown fault again: {error}"))
                    }
                }
            }
        }
    }
}

/// The retry's delay and why, in words: `delay`, or longer if the agent's circuit breaker is
/// open (this failure may just have opened it) and holds its runs back longer, saying so and
/// until when, rather than calling the breaker's wait a backoff.
fn breaker_wait(shared: &Shared, registered: &Registered, delay: Duration) -> (Duration, String) {
    match registered.breaker.as_ref().and_then(|b| b.open_for()) {
        Some(open) if open > delay => (
            open,
            format!(
                "the circuit breaker is open: retry in {} ms, at {}",
                open.as_millis(),
                shared.store.now().after(open)
            ),
        ),
        _ => (delay, format!("retry in {} ms", delay.as_millis())),
    }
}

/// How many earlier moves of `run` were caused by a fault of class `fault` since an
/// operator last approved or replayed it: an operator's decision starts fresh budgets for
/// every fault class.
async fn faults_in_history(shared: &Shared, run: RunId, fault: Fault) -> u32 {
    match shared.store.history(run).await {
        Ok(history) => faults_since_decision(&history, fault),
        Err(error) => {
            tracing::warn!(run_id = %run, %error, "could not read the history; counting no earlier faults");
            0
        }
    }
}

/// The moves caused by a fault of class `fault` after the last operator's approve or replay
/// (a move by an operator out of `needs_review` or `failed_permanent` back to `queued`).
fn faults_since_decision(history: &[HistoryEntry], fault: Fault) -> u32 {
    let decided = history.iter().rposition(|h| {
        matches!(h.actor, Actor::Operator(_))
            && h.to == RunState::Queued
            && matches!(h.from, Some(RunState::NeedsReview | RunState::FailedPermanent))
    });
    let since = decided.map_or(0, |i| i + 1);
    history[since..].iter().filter(|h| h.error.as_ref().is_some_and(|e| e.fault == fault)).count()
        as u32
}
