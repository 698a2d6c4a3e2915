//! What waits for an operator: the runs held for review, each with why, and one of them with
//! the output schema a resolution must fit.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::last_reason;
use crate::lifecycle::{RunId, RunState};
use crate::store::{ListQuery, RunRecord, Store, StoreError};

/// How many held runs [`held_for_review`] lists at most.
pub const REVIEW_LIMIT: usize = 10_000;

/// A run held for review, and why (`steadfast review list`, the API's `/review`).
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Held {
    /// The run.
    pub run: RunRecord,
    /// Why it waits for review, in words (the reason of its last move).
    pub why: String,
}

/// A run with why it is where it is and the output schema kept for its agent (`steadfast
/// review show`, the API's `/review/{id}`): what an operator needs to approve, reject or
/// resolve it.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct ReviewItem {
    /// The run.
    pub run: RunRecord,
    /// Why it is where it is (see [`last_reason`]).
    pub reason: String,
    /// The JSON Schema its output must fit, as kept when the run was created; `None` when
    /// the run's agent has none.
    pub output_schema: Option<Value>,
}

/// The runs held for review, newest first (at most [`REVIEW_LIMIT`]), each with why.
pub async fn held_for_review(store: &dyn Store) -> Result<Vec<Held>, StoreError> {
    let query = ListQuery::new().state(RunState::NeedsReview).limit(REVIEW_LIMIT);
    let runs = store.list(query).await?.runs;
    let mut held = Vec::with_capacity(runs.len());
    for run in runs {
        let why = last_reason(store, &run).await;
        held.push(Held { run, why });
    }
    Ok(held)
}

impl ReviewItem {
    /// Run `id` with its reason and kept output schema; `None` if there is no such run.
    pub async fn load(store: &dyn Store, id: RunId) -> Result<Option<ReviewItem>, StoreError> {
        let Some(run) = store.get(id).await? else { return Ok(None) };
        let schema = match run.output_schema.as_deref() {
            Some(hash) => store.schema(hash).await?,
            None => None,
        };
        let output_schema = schema.and_then(|s| serde_json::from_str(&s).ok());
        let reason = last_reason(store, &run).await;
        Ok(Some(ReviewItem { run, reason, output_schema }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::store::{Claim, MemoryStore, NewRun, Transition};

    #[tokio::test]
    async fn lists_held_runs_with_why_and_loads_one() {
        let store = MemoryStore::new();
        let held = store.create(NewRun::new("a", "k1", json!({}))).await.unwrap().run.id;
        store.create(NewRun::new("a", "k2", json!({}))).await.unwrap();
        assert!(held_for_review(&store).await.unwrap().is_empty());

        let claim = Claim::new("w", 1, Duration::from_secs(30)).runs([held]);
        let token = store.claim(claim).await.unwrap()[0].lease.as_ref().unwrap().token;
        let hold = Transition::new(held, RunState::Processing, RunState::NeedsReview)
            .fenced(token)
            .reason("the total looks wrong");
        store.transition(hold).await.unwrap().unwrap();

        let listed = held_for_review(&store).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].run.id, listed[0].why.as_str()), (held, "the total looks wrong"));
        let item = ReviewItem::load(&store, held).await.unwrap().expect("the run exists");
        assert_eq!((item.reason.as_str(), item.output_schema), ("the total looks wrong", None));
        assert!(ReviewItem::load(&store, RunId::new()).await.unwrap().is_none());
    }
}
