//! The classifier: a model behind the schema gate, with rules as the fallback.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::llm::{ChatClient, ChatError, Message};
use super::rules::Rules;
use super::{Item, Label, Labeled, LabeledBy, Verdict, one_line};
use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Classify, Fault, RetryPolicy};
use crate::schema::{Ask, Attempt, Repair, RepairError};

/// Attempts of a classifier run (transient endpoint failures are retried with backoff; on
/// the last attempt the classifier falls back to the rules instead).
const ATTEMPTS: u32 = 4;

/// The most item text sent to the model, in characters.
const MAX_PROMPT_CHARS: usize = 4_000;

/// Labels one item.
///
/// With a model ([`Classifier::llm`]): the model is asked for a [`Verdict`], its answer goes
/// through the schema gate, and a refused answer is sent back with what was wrong (the repair
/// loop, 3 answers at most). Every answer is journaled with the run (effect `classify`), so a
/// retry does not ask again. 429 and 5xx answers are retried with backoff (honouring
/// `Retry-After`). A refusal, an answer cut off at the token limit, or answers the gate keeps
/// refusing are not retried: the rules decide instead. An item no rule matches either is held
/// for review, with the reason.
///
/// An item with neither title nor text fails permanently (dead letter).
#[derive(Clone, Debug)]
pub struct Classifier {
    llm: Option<ChatClient>,
    rules: Option<Rules>,
    repair: Repair,
}

/// What asking the model came to, as journaled.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Asked {
    Accepted { verdict: Verdict, attempts: Vec<Attempt> },
    GaveUp { reason: String, attempts: Vec<Attempt> },
}

impl Classifier {
    /// The rule-based classifier only.
    pub fn rules(rules: Rules) -> Self {
        Classifier { llm: None, rules: Some(rules), repair: Repair::default() }
    }

    /// The model at `client`, with the bundled rules as the fallback.
    pub fn llm(client: ChatClient) -> Self {
        Classifier { llm: Some(client), rules: Some(Rules::builtin()), repair: Repair::default() }
    }

    /// Falls back to `rules` (`None`: no fallback; what the model cannot label goes to review).
    #[must_use]
    pub fn fallback(mut self, rules: Option<Rules>) -> Self {
        self.rules = rules;
        self
    }

    /// At most `repair`'s number of answers per item.
    #[must_use]
    pub fn repair(mut self, repair: Repair) -> Self {
        self.repair = repair;
        self
    }

    async fn ask_model(
        &self,
        client: &ChatClient,
        item: &Item,
        last_attempt: bool,
    ) -> Result<Asked, AgentError> {
        let system = system_prompt();
        let user = user_prompt(item);
        let result = self
            .repair
            .run::<Verdict, _, _, ChatError>(|ask: Ask| {
                let mut messages = vec![
                    Message { role: "system", content: system.clone() },
                    Message { role: "user", content: user.clone() },
                ];
                if let Some(reask) = ask.reask {
                    messages.push(Message { role: "assistant", content: reask.previous_answer });
                    messages.push(Message { role: "user", content: reask.prompt });
                }
                async move { client.complete::<Verdict>(&messages).await }
            })
            .await;
        match result {
            Ok(repaired) => {
                Ok(Asked::Accepted { verdict: repaired.value, attempts: repaired.attempts })
            }
            Err(RepairError::Exhausted { last, attempts }) => Ok(Asked::GaveUp {
                reason: format!("no valid answer in {} tries: {last}", attempts.len()),
                attempts,
            }),
            Err(RepairError::Ask { source, mut attempts, attempt }) => {
                if let ChatError::Truncated { partial } = &source {
                    let error = Some(source.to_string());
                    attempts.push(Attempt { attempt, answer: partial.clone(), error });
                }
                match source.fault() {
                    Fault::Transient | Fault::Unknown if !last_attempt => {
                        Err(AgentError::from(source))
                    }
                    _ => Ok(Asked::GaveUp { reason: source.to_string(), attempts }),
                }
            }
        }
    }
}

fn system_prompt() -> String {
    let labels = [
        "security: vulnerabilities, advisories, breaches",
        "incident: outages, incidents, post-mortems",
        "release: releases, new versions, changelogs",
        "research: papers, benchmarks, studies",
        "community: events, talks, hiring, community news",
    ];
    format!(
        "You label items for a team's news digest. The labels are:\n- {}\n\nAnswer with one JSON \
         object and nothing else, with the fields `label` (one of the labels), `confidence` (0 to \
         1) and `summary` (one sentence, at most 300 characters). The JSON Schema of the answer:\n{}",
        labels.join("\n- "),
        serde_json::to_string(&crate::schema::json_schema::<Verdict>()).unwrap_or_default()
    )
}

fn user_prompt(item: &Item) -> String {
    let body: String = item.body.chars().take(MAX_PROMPT_CHARS).collect();
    format!("Title: {}\n\n{}", one_line(&item.title, 500), body)
}

/// The one label an operator's note names as a word (`label: community`, "it's community"),
/// `None` if it names none; an error if it names several.
fn label_in_note(note: &str) -> Result<Option<Label>, String> {
    let mut found: Vec<Label> = Vec::new();
    for word in note.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        if let Ok(label) = word.parse::<Label>()
            && !found.contains(&label)
        {
            found.push(label);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(format!(
            "the approving note names several labels ({})",
            many.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[async_trait]
impl Agent for Classifier {
    type Input = Item;
    type Output = Labeled;

    fn name(&self) -> &str {
        "classifier"
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(ATTEMPTS)
            .backoff(Duration::from_millis(500), Duration::from_secs(30))
    }

    async fn run(&self, ctx: &mut Context, item: Item) -> Result<Outcome<Labeled>, AgentError> {
        if item.title.trim().is_empty() && item.body.trim().is_empty() {
            return Err(AgentError::permanent(format!(
                "item `{}` from {} has neither a title nor a text",
                item.id, item.source
            )));
        }
        // An operator who approved the item from review may have named its label in the note
        // (`--note "label: community"`): that decides, as the operator's verdict.
        let mut note_problem = None;
        if let Some(note) = ctx.review_note() {
            match label_in_note(note) {
                Ok(Some(label)) => {
                    let summary = match one_line(&item.title, 300) {
                        t if t.trim().is_empty() => one_line(note, 300),
                        t => t,
                    };
                    let verdict = Verdict { label, confidence: 1.0, summary };
                    return Ok(Outcome::Done(Labeled { item, verdict, by: LabeledBy::Operator }));
                }
                Ok(None) => {
                    note_problem =
                        Some(format!("the approving note `{}` names no label", one_line(note, 80)))
                }
                Err(why) => note_problem = Some(why),
            }
        }
        let mut model_failure = None;
        if let Some(client) = &self.llm {
            let last_attempt = ctx.attempt() >= ATTEMPTS;
            let (me, it) = (self, &item);
            let asked = ctx
                .effect("classify", |_| async move { me.ask_model(client, it, last_attempt).await })
                .await?;
            match asked {
                Asked::Accepted { verdict, attempts } => {
                    let by = LabeledBy::Model {
                        model: client.model().to_owned(),
                        attempts: attempts.len() as u32,
                    };
                    return Ok(Outcome::Done(Labeled { item, verdict, by }));
                }
                Asked::GaveUp { reason, attempts } => {
                    tracing::warn!(
                        parent: ctx.span(), item = %item.id, answers = attempts.len(), %reason,
                        "the model gave no valid label; the rules decide"
                    );
                    model_failure = Some(reason);
                }
            }
        }
        if let Some(rules) = &self.rules
            && let Some((verdict, rule)) = rules.classify(&item)
        {
            return Ok(Outcome::Done(Labeled { item, verdict, by: LabeledBy::Rules { rule } }));
        }
        let mut why = match (model_failure, &self.rules) {
            (Some(model), Some(_)) => {
                format!("the model gave no valid label ({model}) and no rule matched")
            }
            (Some(model), None) => format!("the model gave no valid label ({model})"),
            (None, _) => "no rule matched".to_owned(),
        };
        if let Some(problem) = note_problem {
            why = format!("{problem}, and {why}; approve with a note that names one");
        }
        Ok(Outcome::Review(format!(
            "item `{}` (\"{}\"): {why}; resolve it with a label ({})",
            item.id,
            one_line(&item.title, 80),
            Label::ALL.map(Label::as_str).join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_names_one_label_or_none() {
        assert_eq!(label_in_note("it's community"), Ok(Some(Label::Community)));
        assert_eq!(label_in_note("label: SECURITY."), Ok(Some(Label::Security)));
        assert_eq!(label_in_note("looks fine to me"), Ok(None));
        assert_eq!(label_in_note("securityish"), Ok(None), "a word, not a substring");
        assert!(label_in_note("release or research?").unwrap_err().contains("several"));
    }
}
