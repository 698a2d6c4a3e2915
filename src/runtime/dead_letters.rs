//! Replaying the dead letter queue in bulk: every dead letter (of one agent), each reported.

use super::*;

/// What a bulk replay ([`Runtime::replay_dead_letters`]) did with one dead letter.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct Replayed {
    /// The dead letter's run.
    pub id: RunId,
    /// Its agent.
    pub agent: String,
    /// Whether it is queued again.
    pub replayed: bool,
    /// When it was a pipeline's stage replayed with its pipeline run (listed before it in the
    /// same replay), that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_pipeline: Option<RunId>,
    /// Why not, when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Runtime {
    /// Replays every dead letter, or only `agent`'s, oldest first, as [`Runtime::replay`]
    /// does one: each is reported, replayed or refused (a refusal does not stop the rest).
    ///
    /// A dead pipeline run replays its dead stage with it; that stage's own dead letter, when
    /// it is listed too, is reported as replayed `with_pipeline` rather than refused.
    pub async fn replay_dead_letters(
        &self,
        agent: Option<&str>,
        by: Actor,
        force: bool,
    ) -> Result<Vec<Replayed>, RuntimeError> {
        let store = &self.shared.store;
        let mut dead = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.dead_letters(cursor, 1000).await?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.run);
            dead.extend(page.into_iter().filter(|d| agent.is_none_or(|a| a == d.agent)));
        }
        let mut replayed = std::collections::HashSet::new();
        let mut report = Vec::with_capacity(dead.len());
        for letter in dead {
            let mut outcome = Replayed {
                id: letter.run,
                agent: letter.agent,
                replayed: false,
                with_pipeline: None,
                error: None,
            };
            let parent = match store.get(letter.run).await? {
                Some(run) => run.parent.filter(|p| replayed.contains(p)),
                None => None,
            };
            if let Some(pipeline) = parent {
                outcome.replayed = true;
                outcome.with_pipeline = Some(pipeline);
                report.push(outcome);
                continue;
            }
            match self.replay(letter.run, by.clone(), force).await {
                Ok(_) => {
                    outcome.replayed = true;
                    replayed.insert(letter.run);
                }
                Err(error) => outcome.error = Some(error.to_string()),
            }
            report.push(outcome);
        }
        let refused = report.iter().filter(|r| !r.replayed).count();
        tracing::info!(replayed = report.len() - refused, refused, "dead letters replayed");
        Ok(report)
    }
}
