//! Property test: random fault scripts per run; the runtime's final states, attempt counts,
//! histories, dead letters and effect counts agree with a model of the fault table, whatever
//! the breaker and the scheduling did on the way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proptest::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use steadfast::prelude::*;
use steadfast::testing::Harness;

const MAX_ATTEMPTS: u32 = 4;
const RESOURCE_BUDGET: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
enum Step {
    Ok,
    Transient,
    Resource,
    Logic,
    Permanent,
    Unknown,
    Panic,
    Review,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Script {
    id: u32,
    steps: Vec<Step>,
}

#[derive(Clone, Default)]
struct Scripted {
    effects: Arc<Mutex<HashMap<u32, u32>>>,
}

#[async_trait]
impl Agent for Scripted {
    type Input = Script;
    type Output = u32;
    fn name(&self) -> &str {
        "scripted"
    }
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(MAX_ATTEMPTS)
            .resource(std::time::Duration::from_secs(5), RESOURCE_BUDGET)
    }
    async fn run(&self, ctx: &mut Context, script: Script) -> Result<Outcome<u32>, AgentError> {
        let effects = self.effects.clone();
        ctx.effect("e", |_| async move {
            *effects.lock().unwrap().entry(script.id).or_default() += 1;
            Ok(())
        })
        .await?;
        let step = script.steps.get(ctx.attempt() as usize - 1).copied().unwrap_or(Step::Ok);
        match step {
            Step::Ok => Ok(Outcome::Done(ctx.attempt())),
            Step::Transient => Err(AgentError::transient("t")),
            Step::Resource => Err(AgentError::resource("r")),
            Step::Logic => Err(AgentError::logic("l")),
            Step::Permanent => Err(AgentError::permanent("p")),
            Step::Unknown => Err(AgentError::unknown("u")),
            Step::Panic => panic!("scripted panic"),
            Step::Review => Ok(Outcome::Review("scripted review".into())),
        }
    }
}

/// The fault table, applied to a script: (final state, attempts).
fn expected(steps: &[Step]) -> (RunState, u32) {
    let (mut resources, mut unknowns) = (0, 0);
    for attempt in 1.. {
        let step = steps.get(attempt as usize - 1).copied().unwrap_or(Step::Ok);
        match step {
            Step::Ok => return (RunState::Succeeded, attempt),
            Step::Review | Step::Logic => return (RunState::NeedsReview, attempt),
            Step::Permanent => return (RunState::FailedPermanent, attempt),
            Step::Transient if attempt >= MAX_ATTEMPTS => {
                return (RunState::FailedPermanent, attempt);
            }
            Step::Transient => {}
            Step::Resource => {
                resources += 1;
                if resources >= RESOURCE_BUDGET {
                    return (RunState::NeedsReview, attempt);
                }
            }
            Step::Unknown | Step::Panic => {
                unknowns += 1;
                if unknowns > 1 {
                    return (RunState::FailedPermanent, attempt);
                }
            }
        }
    }
    unreachable!()
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Ok),
        4 => Just(Step::Transient),
        1 => Just(Step::Resource),
        1 => Just(Step::Logic),
        1 => Just(Step::Permanent),
        1 => Just(Step::Unknown),
        1 => Just(Step::Panic),
        1 => Just(Step::Review),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn final_states_follow_the_fault_table(
        scripts in proptest::collection::vec(proptest::collection::vec(step(), 0..6), 1..12),
        workers in 1usize..5,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let agent = Scripted::default();
            let harness = Harness::new(|rt| rt.workers(workers).register(agent.clone()));
            let mut ids = Vec::new();
            for (id, steps) in scripts.iter().enumerate() {
                let script = Script { id: id as u32, steps: steps.clone() };
                ids.push(harness.runtime().submit("scripted", script).await.unwrap().id);
            }
            harness.runtime().run_until_idle().await.unwrap();
            let mut dead = 0;
            for (i, id) in ids.iter().enumerate() {
                let report = harness.report(*id).await;
                let (state, attempts) = expected(&scripts[i]);
                prop_assert_eq!(report.run.state, state, "script {:?}{}", scripts[i], report.timeline());
                prop_assert_eq!(report.run.attempt, attempts, "script {:?}{}", scripts[i], report.timeline());
                for pair in report.history.windows(2) {
                    prop_assert!(pair[0].to.can_transition(pair[1].to));
                }
                prop_assert_eq!(agent.effects.lock().unwrap().get(&(i as u32)).copied(), Some(1), "the effect ran once");
                dead += usize::from(state == RunState::FailedPermanent);
            }
            prop_assert_eq!(harness.runtime().store().dead_letters(None, 1000).await.unwrap().len(), dead);
            Ok(())
        })?;
    }
}
