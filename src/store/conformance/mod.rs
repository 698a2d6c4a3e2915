//! The conformance suite every [`Store`] must pass (feature `testing`).
//!
//! A failed check panics with the case's name and what differed. Run it from a test with a
//! factory that opens a fresh, empty store on the given clock:
//!
//! ```no_run
//! use steadfast::store::{SledStore, SledStoreOptions, conformance};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn sled_store_conforms() {
//!     conformance::run(|clock| async move {
//!         let dir = tempfile::tempdir().unwrap().keep();
//!         SledStore::open_with(dir, SledStoreOptions::default().clock(clock)).unwrap()
//!     })
//!     .await;
//! }
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Claim, NewRun, Store};
use crate::clock::{ManualClock, Timestamp};
use crate::lifecycle::RunId;

mod claims;
mod moves;
mod records;
mod retention;

use self::claims::*;
use self::moves::*;
use self::records::*;
use self::retention::*;

const LEASE: Duration = Duration::from_secs(30);

/// Runs every case, each on a fresh store made by `factory` around a [`ManualClock`].
pub async fn run<S, F, Fut>(mut factory: F)
where
    S: Store,
    F: FnMut(Arc<ManualClock>) -> Fut,
    Fut: Future<Output = S>,
{
    macro_rules! cases {
        ($($case:ident),* $(,)?) => {$(
            let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
            let store = Arc::new(factory(clock.clone()).await);
            $case(store, clock).await;
        )*};
    }
    cases!(
        create_deduplicates_by_key,
        transition_is_compare_and_set,
        moves_create_their_follow_ups,
        illegal_moves_change_nothing,
        claims_are_exclusive_under_concurrency,
        claims_respect_due_time_and_agents,
        claims_can_name_their_runs,
        expired_leases_are_recovered_and_fenced,
        heartbeat_keeps_a_lease,
        timers_come_due,
        effects_first_record_wins,
        starts_are_kept_apart_from_effects,
        history_is_ordered_and_explains_the_state,
        dead_letters_follow_failed_permanent,
        list_pages_with_cursors,
        counts_and_notes,
        attempts_refund_and_reset,
        concurrency_keys_serialize_processing,
        children_are_listed_by_parent,
        schemas_are_kept_by_hash,
        oldest_queued_is_the_earliest_due_of_the_agent,
        prune_deletes_old_runs_at_rest_with_all_they_kept,
        a_pipeline_goes_with_its_stages_or_not_at_all,
        prune_works_in_batches_and_spares_runs_that_moved,
    );
}

async fn queued<S: Store>(store: &S, agent: &str, key: &str) -> RunId {
    store.create(NewRun::new(agent, key, json!({ "key": key }))).await.unwrap().run.id
}

/// Claims exactly `run` (the only due run of its agent), returning its fencing token.
async fn claim_one<S: Store>(store: &S, agent: &str) -> (RunId, u64) {
    let claimed = store.claim(Claim::new("w1", 1, LEASE).agents([agent])).await.unwrap();
    assert_eq!(claimed.len(), 1, "expected one due run of `{agent}`");
    let run = &claimed[0];
    (run.id, run.lease.as_ref().expect("a claimed run has a lease").token)
}

trait ClockExt {
    fn now_plus(&self, by: Duration) -> Timestamp;
}

impl ClockExt for ManualClock {
    fn now_plus(&self, by: Duration) -> Timestamp {
        crate::clock::Clock::now(self).after(by)
    }
}
