//! Writing a [`Store`](super::Store) backend: what to implement, what the contract decides for
//! you, and which suite proves it.
//!
//! A backend only reads and writes. Every rule of the contract (is this move allowed, is this
//! fence stale, what a claim, a heartbeat or a lease expiry writes, what a move changes in a
//! run, when a dead letter is added or removed, which counter moves) is decided by the pure
//! functions of this module, which return a [`Plan`]. The backend's work, per call:
//!
//! - **`create`**: [`check_new_run`]; if the key `(agent, idempotency_key)` is taken, answer
//!   with that run (`created: false`); otherwise apply [`plan_create`] under a new
//!   [`RunId`](crate::lifecycle::RunId).
//! - **`transition`**: [`check_transition`] (a refusal is a [`StoreError`]); read the run
//!   ([`StoreError::NotFound`] if absent); [`plan_move`] (a [`Conflict`] is answered as one,
//!   with nothing written); apply the plan and create its [`Plan::follow_ups`] whose keys are
//!   free, all in one atomic write.
//! - **`claim`**: scan due `queued` runs oldest due first (of `Claim::agents` or
//!   `Claim::runs` if given), [`plan_claim`] each, telling it whether a run with the same
//!   concurrency key is processing ([`LockChange`] keeps that set), until `limit` are claimed;
//!   each run goes to exactly one claimer (a row lock, a compare-and-set, a single writer).
//! - **`heartbeat`**: [`plan_heartbeat`], write the run. **`recover_expired`**: [`plan_expiry`]
//!   over runs whose lease expired, earliest first.
//! - Applying a [`Plan`]: write [`Plan::head`] over the run; append [`Plan::history`]; write
//!   [`Plan::input`] (creation only: register the key and the parent's link too), apply
//!   [`Plan::output`] and [`Plan::signal`] ([`Payload`]), [`Plan::dead_letter`],
//!   [`Plan::lock`] and [`Plan::counts`] (per agent and state, so that `counts` and
//!   `counts_by_agent` read counters instead of scanning runs). All of a call's plans are one
//!   atomic, durable write before the call returns (a claim may answer before its sync, see
//!   [`Store::wait_durable`](super::Store::wait_durable)).
//! - The reads (`get`, `find_by_key`, `list`, `history`, `effects`, `dead_letters`, `notes`,
//!   `counts`, `next_due`, `due_timers`), the effects journal (first record wins), starts,
//!   notes, schemas, agent controls and `prune` ([`Retention`](super::Retention) decides which
//!   runs go) are plain reads and writes.
//! - [`Store::work_signal`](super::Store::work_signal): if runs can be created by another
//!   process (a shared database), tell the runtime when work may be there.
//!
//! **The judge**: `steadfast::store::conformance` (feature `testing`) runs the whole contract
//! against fresh stores of yours, each on the clock it is given:
//! `conformance::run(|clock| async move { MyStore::with_clock(clock) }).await`. The
//! crate's own backends pass it, a model-based property test (`tests/store_model.rs`) and a
//! SIGKILL test; a new backend should pass all three.

pub use super::head::RunHead;
pub use super::plan::{
    CountDelta, DeadLetterChange, Expiry, LockChange, Payload, Plan, check_new_run,
    check_transition, claimable, plan_claim, plan_create, plan_expiry, plan_heartbeat, plan_move,
};
#[allow(unused_imports)] // named by the module docs
use super::{Conflict, StoreError};
