//! The operator's calls on a running system: signal, approve, reject, resolve, replay,
//! cancel, note. Each checks the run's state against what the call allows, in one place, and
//! moves it through the store's compare-and-set: a refused call changes nothing and says why.

use super::*;
use crate::pipeline::is_stage_signal;
use crate::store::ListQuery;

impl Runtime {
    async fn get(&self, run: RunId) -> Result<RunRecord, RuntimeError> {
        self.shared.store.get(run).await?.ok_or(RuntimeError::NotFound(run))
    }

    /// The run, if it is in one of the states `action` is `allowed` from; otherwise the
    /// refusal naming its state and those states.
    async fn get_in(
        &self,
        run: RunId,
        action: &'static str,
        allowed: &[RunState],
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get(run).await?;
        if !allowed.contains(&record.state) {
            return Err(refused(&record, action, allowed));
        }
        Ok(record)
    }

    /// Moves a run of `agent` for an operator (with the notifications the move raises),
    /// mapping a race to [`RuntimeError::Raced`].
    async fn operate(
        &self,
        agent: &str,
        transition: Transition,
    ) -> Result<RunRecord, RuntimeError> {
        let run = transition.run;
        match self.shared.commit(agent, transition, false).await? {
            Ok(record) => Ok(record),
            Err(Conflict::State { current, .. }) => Err(RuntimeError::Raced { run, current }),
            Err(Conflict::Fenced { .. }) => {
                Err(RuntimeError::Raced { run, current: RunState::Processing })
            }
        }
    }

    /// Sends signal `name` to a run waiting for it; its payload reaches the next attempt as
    /// [`Context::signal`](crate::Context::signal).
    pub async fn signal(
        &self,
        run: RunId,
        name: &str,
        payload: Value,
        by: Actor,
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get_in(run, "signal", &[RunState::WaitingExternal]).await?;
        if self.shared.waits_on_children(&record.agent) || is_stage_signal(name) {
            return Err(RuntimeError::InvalidRequest(format!(
                "run {run} is a pipeline run waiting on its stages (`{}`): the runtime wakes it \
                 when a stage settles; signal a stage's own run instead",
                record.waiting_for.as_deref().unwrap_or_default()
            )));
        }
        if let Some(waiting) = record.waiting_for.as_deref().filter(|w| *w != name) {
            return Err(RuntimeError::WrongSignal {
                run,
                waiting: waiting.to_owned(),
                sent: name.to_owned(),
            });
        }
        self.operate(
            &record.agent,
            checked_move!(run, WaitingExternal => Queued)
                .by(by)
                .signal(payload)
                .reason(format!("signal `{name}` received")),
        )
        .await
    }

    /// Approves a run held for review: it is queued again with a fresh attempt budget, and
    /// `note` reaches its next attempt as [`Context::review_note`](crate::Context::review_note).
    pub async fn approve(
        &self,
        run: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get_in(run, "approve", &[RunState::NeedsReview]).await?;
        let mut t = checked_move!(run, NeedsReview => Queued)
            .by(by.clone())
            .reset_attempts()
            .reason(reason_with("approved", note));
        if let Some(note) = note {
            t = t.review_note(note);
            self.shared.store.add_note(run, by, note).await?;
        }
        self.operate(&record.agent, t).await
    }

    /// Rejects a run held for review: it goes to the dead letter queue.
    pub async fn reject(
        &self,
        run: RunId,
        by: Actor,
        note: Option<&str>,
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get_in(run, "reject", &[RunState::NeedsReview]).await?;
        if let Some(note) = note {
            self.shared.store.add_note(run, by.clone(), note).await?;
        }
        self.operate(
            &record.agent,
            checked_move!(run, NeedsReview => FailedPermanent)
                .by(by)
                .reason(reason_with("rejected", note)),
        )
        .await
    }

    /// Resolves a run held for review with an output the operator provides, validated against
    /// the agent's output schema: the run succeeds with it.
    pub async fn resolve(
        &self,
        run: RunId,
        by: Actor,
        output: Value,
    ) -> Result<RunRecord, RuntimeError> {
        let record = self.get_in(run, "resolve", &[RunState::NeedsReview]).await?;
        // With the agent registered here, its Rust type decides; otherwise the schema the
        // store kept for the run's output (the CLI resolves runs of agents it has no types of).
        match self.shared.agents.get(&record.agent) {
            Some(agent) => agent.agent.check_output(&output),
            None => {
                let hash = record.output_schema.as_deref().unwrap_or_default();
                let Some(schema) = self.shared.store.schema(hash).await? else {
                    return Err(RuntimeError::NoSchema { run, agent: record.agent.clone() });
                };
                crate::schema::check_with(&schema, "the agent's output", &output)
            }
        }
        .map_err(|source| RuntimeError::InvalidOutput { run, source })?;
        self.operate(
            &record.agent,
            checked_move!(run, NeedsReview => Succeeded)
                .by(by)
                .output(output)
                .reason("resolved by an operator"),
        )
        .await
    }

    /// Replays a dead letter or a run held for review: queued again with the same input and a
    /// fresh attempt budget (and fresh fault budgets). Refused if the agent's input type
    /// changed since the run was created, unless `force`.
    ///
    /// A pipeline run that failed because a stage failed replays that stage too (its dead
    /// runs of the last stage reached, first), so the pipeline goes on from there instead of
    /// failing again at once on the same dead stage.
    pub async fn replay(
        &self,
        run: RunId,
        by: Actor,
        force: bool,
    ) -> Result<RunRecord, RuntimeError> {
        Ok(self.replay_with_stages(run, by, force).await?.run)
    }

    /// [`replay`](Runtime::replay), reporting the stage runs replayed with a failed pipeline
    /// run too.
    pub async fn replay_with_stages(
        &self,
        run: RunId,
        by: Actor,
        force: bool,
    ) -> Result<crate::view::Replay, RuntimeError> {
        let allowed = [RunState::FailedPermanent, RunState::NeedsReview];
        let record = self.get_in(run, "replay", &allowed).await?;
        let mut stages = Vec::new();
        for stage in self.dead_stages(&record).await? {
            stages.push(self.replay_one(&stage, by.clone(), force, Some(run)).await?);
        }
        let run = self.replay_one(&record, by, force, None).await?;
        Ok(crate::view::Replay { run, stages })
    }

    /// The dead runs of the last stage a failed pipeline run reached.
    async fn dead_stages(&self, record: &RunRecord) -> Result<Vec<RunRecord>, RuntimeError> {
        if record.state != RunState::FailedPermanent {
            return Ok(Vec::new());
        }
        let mut children = Vec::new();
        let mut query = ListQuery::new().parent(record.id).limit(1000);
        loop {
            let page = self.shared.store.list(query.clone()).await?;
            children.extend(page.runs);
            match page.next {
                Some(next) => query = query.cursor(next),
                None => break,
            }
        }
        let last = children.iter().filter_map(|c| c.stage).max();
        children.retain(|c| c.stage == last && c.state == RunState::FailedPermanent);
        Ok(children)
    }

    async fn replay_one(
        &self,
        record: &RunRecord,
        by: Actor,
        force: bool,
        with: Option<RunId>,
    ) -> Result<RunRecord, RuntimeError> {
        let run = record.id;
        // The schema check needs the agent's current type: only a process that registers the
        // agent has it. Elsewhere (the CLI) the run is replayed unchecked, and the worker that
        // claims it refuses an input its type no longer takes.
        let mut reason = if force { "replayed (forced)" } else { "replayed" }.to_owned();
        if let Some(pipeline) = with {
            reason.push_str(&format!(" with its pipeline run {pipeline}"));
        }
        match self.shared.agents.get(&record.agent) {
            Some(agent) => {
                let current = agent.agent.input_schema();
                if let Some(stored) =
                    record.input_schema.as_ref().filter(|s| **s != current && !force)
                {
                    return Err(RuntimeError::SchemaChanged {
                        run,
                        agent: record.agent.clone(),
                        stored: stored.clone(),
                        current,
                    });
                }
            }
            None => reason.push_str(" (input schema not checked: agent not registered here)"),
        }
        self.operate(
            &record.agent,
            Transition::new(run, record.state, RunState::Queued)
                .by(by)
                .reset_attempts()
                .reason(reason),
        )
        .await
    }

    /// Cancels a run that is not being processed: it goes to the dead letter queue.
    pub async fn cancel(&self, run: RunId, by: Actor) -> Result<RunRecord, RuntimeError> {
        let allowed = [
            RunState::Queued,
            RunState::WaitingExternal,
            RunState::FailedTransient,
            RunState::NeedsReview,
        ];
        let record = self.get_in(run, "cancel", &allowed).await?;
        self.operate(
            &record.agent,
            Transition::new(run, record.state, RunState::FailedPermanent)
                .by(by)
                .reason("cancelled"),
        )
        .await
    }

    /// Adds an operator's note to a run; an empty note is refused.
    pub async fn note(&self, run: RunId, by: Actor, text: &str) -> Result<Note, RuntimeError> {
        if text.trim().is_empty() {
            return Err(RuntimeError::InvalidRequest("a note needs some text".into()));
        }
        self.get(run).await?;
        Ok(self.shared.store.add_note(run, by, text).await?)
    }
}

fn reason_with(what: &str, note: Option<&str>) -> String {
    match note {
        Some(note) => format!("{what}: {note}"),
        None => what.to_owned(),
    }
}

fn refused(record: &RunRecord, action: &'static str, allowed: &[RunState]) -> RuntimeError {
    let names: Vec<String> = allowed.iter().map(|s| format!("`{s}`")).collect();
    let allowed = match names.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        [] => "nowhere".into(),
    };
    RuntimeError::Refused { run: record.id, state: record.state, action, allowed }
}
