//! Model-based property test: random sequences of store operations (including reopening the
//! database) against an in-memory model of the store's contract; after every operation the
//! store and the model agree on every run's state, attempt, lease and due time, and on every
//! answer (conflicts, refusals, effects). Every move the test asks for also carries a
//! follow-up run (an outbox entry, due far in the future so nothing claims it): it exists,
//! under the move's number, exactly when the move was made, across reopenings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};
use steadfast::clock::{Clock, ManualClock, Timestamp};
use steadfast::store::{
    Claim, Conflict, Durability, NewRun, PostgresOptions, PostgresStore, Retention, SledStore,
    SledStoreOptions, Store, StoreError, Transition,
};
use steadfast::{RunId, RunState, StateMachine};

#[path = "common/peers.rs"]
mod peers;
#[path = "common/postgres.rs"]
mod postgres;

const LEASE: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Claim(usize),
    /// The worker holding run `n` reports an outcome; `stale` uses an older token.
    Finish {
        run: usize,
        to: RunState,
        stale: bool,
    },
    /// An operator's move of run `n` to `to`, believing it is in `from` (or its real state).
    Operator {
        run: usize,
        to: RunState,
        wrong_from: Option<RunState>,
    },
    Advance(u64),
    Recover,
    Timers,
    Effect {
        run: usize,
        name: bool,
        value: u8,
    },
    Reopen,
    /// Retention: runs at rest for `older` seconds or more, dead letters and runs in review
    /// too when asked.
    Prune {
        older: u64,
        dead: bool,
        review: bool,
    },
}

fn state() -> impl Strategy<Value = RunState> {
    proptest::sample::select(RunState::STATES)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..8).prop_map(Op::Create),
        3 => (1usize..4).prop_map(Op::Claim),
        4 => (0usize..8, proptest::sample::select(&[
                RunState::Succeeded, RunState::FailedTransient, RunState::FailedPermanent,
                RunState::WaitingExternal, RunState::NeedsReview][..]), proptest::bool::weighted(0.2))
            .prop_map(|(run, to, stale)| Op::Finish { run, to, stale }),
        2 => (0usize..8, state(), proptest::option::weighted(0.3, state()))
            .prop_map(|(run, to, wrong_from)| Op::Operator { run, to, wrong_from }),
        2 => (0u64..40).prop_map(Op::Advance),
        1 => Just(Op::Recover),
        2 => Just(Op::Timers),
        2 => (0usize..8, any::<bool>(), any::<u8>()).prop_map(|(run, name, value)| Op::Effect { run, name, value }),
        1 => Just(Op::Reopen),
        1 => (0u64..60, any::<bool>(), any::<bool>())
            .prop_map(|(older, dead, review)| Op::Prune { older, dead, review }),
    ]
}

#[derive(Clone, Debug)]
struct ModelRun {
    id: RunId,
    key: u8,
    state: RunState,
    attempt: u32,
    fence: u64,
    lease_expires: Option<Timestamp>,
    due: Option<Timestamp>,
    effects: HashMap<String, Value>,
    moved_at: Timestamp,
    /// Moves recorded in its history (the next move's number).
    moves: u32,
}

#[derive(Default)]
struct Model {
    runs: Vec<ModelRun>,
    /// The runs in progress when the store was last opened: their process is gone, so the
    /// next recovery takes them whatever their lease's expiry.
    orphans: std::collections::HashSet<RunId>,
    /// The keys of the follow-up runs the moves made so far created.
    follow_ups: Vec<String>,
}

/// The follow-up every requested move carries: a run of agent `follow` keyed by the run's id
/// (the store adds the move's number), never due within a test.
fn follow_up(run: RunId) -> NewRun {
    let never = Timestamp::from_millis(4_000_000_000_000);
    NewRun::new("follow", format!("f{run}"), json!({ "run": run.to_string() })).due_at(never)
}

impl Model {
    fn moved(run: &mut ModelRun, to: RunState, due: Option<Timestamp>, now: Timestamp) {
        run.state = to;
        run.moved_at = now;
        run.moves += 1;
        run.due = match to {
            RunState::Queued | RunState::FailedTransient => Some(due.unwrap_or(now)),
            RunState::WaitingExternal => due,
            _ => None,
        };
        if to != RunState::Processing {
            run.lease_expires = None;
        }
    }
}

fn open(path: &Path, clock: &Arc<ManualClock>) -> SledStore {
    let options = SledStoreOptions::default().clock(clock.clone()).durability(Durability::Flush);
    SledStore::open_with(path, options).unwrap()
}

/// The store under test, and how to open it again.
enum Subject {
    Sled(SledStore, PathBuf),
    Postgres(PostgresStore, String, PostgresOptions),
}

impl Subject {
    fn store(&self) -> &dyn Store {
        match self {
            Subject::Sled(store, _) => store,
            Subject::Postgres(store, ..) => store,
        }
    }

    /// Closes the store and opens it again; whether the leases held before are orphaned (the
    /// embedded store lets one process open a database, so its leases died with the last one).
    async fn reopen(&mut self, clock: &Arc<ManualClock>) -> bool {
        match self {
            Subject::Sled(store, path) => {
                let placeholder = open(&path.with_extension("scratch"), clock);
                drop(std::mem::replace(store, placeholder));
                *store = open(path, clock);
                true
            }
            Subject::Postgres(store, url, options) => {
                *store = PostgresStore::connect_with(url, options.clone()).await.unwrap();
                false
            }
        }
    }
}

async fn check(store: &dyn Store, model: &Model) -> Result<(), TestCaseError> {
    for m in &model.runs {
        let r = store.get(m.id).await.unwrap().expect("model run exists in the store");
        prop_assert_eq!(r.state, m.state, "state of {}", m.key);
        prop_assert_eq!(r.attempt, m.attempt, "attempt of {}", m.key);
        prop_assert_eq!(r.fence, m.fence, "fence of {}", m.key);
        prop_assert_eq!(
            r.lease.as_ref().map(|l| l.expires_at),
            m.lease_expires,
            "lease of {}",
            m.key
        );
        prop_assert_eq!(r.due_at, m.due, "due time of {}", m.key);
    }
    let follow_ups = model.follow_ups.len() as u64;
    let counts = store.counts().await.unwrap();
    prop_assert_eq!(counts.total(), model.runs.len() as u64 + follow_ups);
    let by_agent = store.counts_by_agent().await.unwrap();
    prop_assert_eq!(by_agent.get("agent").map_or(0, |c| c.total()), model.runs.len() as u64);
    prop_assert_eq!(by_agent.get("follow").map_or(0, |c| c.get(RunState::Queued)), follow_ups);
    prop_assert_eq!(by_agent.get("follow").map_or(0, |c| c.total()), follow_ups);
    prop_assert!(by_agent.keys().all(|a| a == "agent" || a == "follow"), "{:?}", by_agent);
    for &s in RunState::STATES {
        let want = model.runs.iter().filter(|r| r.state == s).count() as u64;
        prop_assert_eq!(by_agent.get("agent").map_or(0, |c| c.get(s)), want, "{}", s);
    }
    for key in &model.follow_ups {
        let run = store.find_by_key("follow", key).await.unwrap();
        prop_assert!(run.is_some_and(|r| r.state == RunState::Queued), "follow-up {}", key);
    }
    Ok(())
}

async fn apply(
    subject: &mut Subject,
    model: &mut Model,
    clock: &Arc<ManualClock>,
    op: Op,
) -> Result<(), TestCaseError> {
    if let Op::Reopen = op {
        if subject.reopen(clock).await {
            model.orphans = model
                .runs
                .iter()
                .filter(|m| m.state == RunState::Processing && m.lease_expires.is_some())
                .map(|m| m.id)
                .collect();
        }
        return Ok(());
    }
    let store = subject.store();
    let now = clock.now();
    let pick = |n: usize| if model.runs.is_empty() { None } else { Some(n % model.runs.len()) };
    match op {
        Op::Create(key) => {
            let created =
                store.create(NewRun::new("agent", format!("k{key}"), json!(key))).await.unwrap();
            match model.runs.iter().find(|r| r.key == key) {
                Some(existing) => {
                    prop_assert!(!created.created);
                    prop_assert_eq!(created.run.id, existing.id);
                }
                None => {
                    prop_assert!(created.created);
                    model.runs.push(ModelRun {
                        id: created.run.id,
                        key,
                        state: RunState::Queued,
                        attempt: 0,
                        fence: 0,
                        lease_expires: None,
                        due: Some(now),
                        effects: HashMap::new(),
                        moved_at: now,
                        moves: 1,
                    });
                }
            }
        }
        Op::Claim(limit) => {
            let claimed = store.claim(Claim::new("w", limit, LEASE)).await.unwrap();
            let mut due: Vec<usize> = (0..model.runs.len())
                .filter(|&i| {
                    model.runs[i].state == RunState::Queued
                        && model.runs[i].due.is_some_and(|d| d <= now)
                })
                .collect();
            due.sort_by_key(|&i| (model.runs[i].due, model.runs[i].id));
            due.truncate(limit);
            let got: Vec<RunId> = claimed.iter().map(|r| r.id).collect();
            let want: Vec<RunId> = due.iter().map(|&i| model.runs[i].id).collect();
            prop_assert_eq!(got, want, "claimed runs");
            for i in due {
                let run = &mut model.runs[i];
                run.attempt += 1;
                run.fence += 1;
                Model::moved(run, RunState::Processing, None, now);
                run.lease_expires = Some(now.after(LEASE));
            }
        }
        Op::Finish { run, to, stale } => {
            let Some(i) = pick(run) else { return Ok(()) };
            let m = &mut model.runs[i];
            let token = if stale { m.fence.saturating_sub(1) } else { m.fence };
            let due = now.after(Duration::from_secs(5));
            let answer = store
                .transition(
                    Transition::new(m.id, RunState::Processing, to)
                        .fenced(token)
                        .due_at(due)
                        .follow_up(follow_up(m.id)),
                )
                .await
                .unwrap();
            if m.state != RunState::Processing {
                prop_assert_eq!(
                    answer,
                    Err(Conflict::State {
                        run: m.id,
                        expected: RunState::Processing,
                        current: m.state
                    })
                );
            } else if token != m.fence {
                prop_assert_eq!(
                    answer,
                    Err(Conflict::Fenced { run: m.id, token, current: m.fence })
                );
            } else {
                prop_assert!(answer.is_ok());
                model.follow_ups.push(format!("f{}:{}", m.id, m.moves));
                Model::moved(m, to, Some(due), now);
            }
        }
        Op::Operator { run, to, wrong_from } => {
            let Some(i) = pick(run) else { return Ok(()) };
            let m = &mut model.runs[i];
            let from = wrong_from.unwrap_or(m.state);
            let request = Transition::new(m.id, from, to).follow_up(follow_up(m.id));
            let answer = store.transition(request).await;
            if !from.can_transition(to) {
                prop_assert!(
                    matches!(answer, Err(StoreError::IllegalTransition { .. })),
                    "{:?}",
                    answer
                );
            } else if to == RunState::Processing || from == RunState::Processing {
                prop_assert!(matches!(answer, Err(StoreError::InvalidRequest(_))), "{:?}", answer);
            } else if from != m.state {
                prop_assert_eq!(
                    answer.unwrap(),
                    Err(Conflict::State { run: m.id, expected: from, current: m.state })
                );
            } else {
                prop_assert!(matches!(answer, Ok(Ok(_))), "{:?}", answer);
                model.follow_ups.push(format!("f{}:{}", m.id, m.moves));
                Model::moved(m, to, None, now);
            }
        }
        Op::Advance(secs) => clock.advance(Duration::from_secs(secs)),
        Op::Recover => {
            let mut got: Vec<RunId> =
                store.recover_expired(100).await.unwrap().into_iter().map(|r| r.id).collect();
            let mut want = Vec::new();
            let orphans = std::mem::take(&mut model.orphans);
            for m in &mut model.runs {
                let expired = m.lease_expires.is_some_and(|e| e <= now);
                if m.state == RunState::Processing && (expired || orphans.contains(&m.id)) {
                    want.push(m.id);
                    Model::moved(m, RunState::FailedTransient, None, now);
                }
            }
            got.sort();
            want.sort();
            prop_assert_eq!(got, want, "recovered runs");
        }
        Op::Timers => {
            let mut got: Vec<RunId> =
                store.due_timers(100).await.unwrap().into_iter().map(|r| r.id).collect();
            let mut want: Vec<RunId> = model
                .runs
                .iter()
                .filter(|m| {
                    matches!(m.state, RunState::FailedTransient | RunState::WaitingExternal)
                        && m.due.is_some_and(|d| d <= now)
                })
                .map(|m| m.id)
                .collect();
            got.sort();
            want.sort();
            prop_assert_eq!(&got, &want, "due timers");
            for id in want {
                let m = model.runs.iter_mut().find(|m| m.id == id).unwrap();
                let to = if m.state == RunState::FailedTransient {
                    RunState::Queued
                } else {
                    RunState::FailedTransient
                };
                store.transition(Transition::new(id, m.state, to)).await.unwrap().unwrap();
                Model::moved(m, to, None, now);
            }
        }
        Op::Effect { run, name, value } => {
            let Some(i) = pick(run) else { return Ok(()) };
            let m = &mut model.runs[i];
            let name = if name { "send" } else { "fetch" };
            let recorded = store.record_effect(m.id, name, json!(value)).await.unwrap();
            let expected = m.effects.entry(name.to_owned()).or_insert(json!(value));
            prop_assert_eq!(&recorded.result, expected, "first record wins");
        }
        Op::Prune { older, dead, review } => {
            let older = Duration::from_secs(older);
            let policy = Retention::older_than(older).dead_letters(dead).in_review(review);
            let pruned = store.prune(policy.clone()).await.unwrap();
            let cutoff = now.before(older);
            let (gone, kept): (Vec<ModelRun>, Vec<ModelRun>) = model
                .runs
                .drain(..)
                .partition(|m| policy.states.contains(&m.state) && m.moved_at <= cutoff);
            model.runs = kept;
            prop_assert_eq!(pruned.runs, gone.len() as u64, "pruned runs");
            for m in gone {
                prop_assert!(store.get(m.id).await.unwrap().is_none(), "{} pruned", m.key);
                prop_assert!(store.history(m.id).await.unwrap().is_empty());
                prop_assert!(store.effects(m.id).await.unwrap().is_empty());
            }
        }
        Op::Reopen => unreachable!("handled above"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_model(ops in proptest::collection::vec(op(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
            let mut subject = Subject::Sled(open(&path, &clock), path);
            let mut model = Model::default();
            for op in ops {
                apply(&mut subject, &mut model, &clock, op).await?;
                check(subject.store(), &model).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

proptest! {
    // Each case in a fresh schema on the local server (fewer cases: every call is a round
    // trip).
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn postgres_store_agrees_with_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let Some((url, options)) = postgres::fresh().await else { return Ok(()) };
            let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_800_000_000_000)));
            let options = options.clock(clock.clone());
            let store = PostgresStore::connect_with(&url, options.clone()).await.unwrap();
            let mut subject = Subject::Postgres(store, url, options);
            let mut model = Model::default();
            for op in ops {
                apply(&mut subject, &mut model, &clock, op).await?;
                check(subject.store(), &model).await?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
