//! The repair loop for LLM answers: ask, parse, and on failure ask again with the violations,
//! a bounded number of times, recording every attempt.

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::SchemaError;

/// Asks a model for a `T` until its answer passes the schema gate, at most `max_attempts`
/// times in all.
///
/// ```
/// # use schemars::JsonSchema;
/// # use serde::Deserialize;
/// use steadfast::schema::{Ask, Repair};
///
/// #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
/// struct Label { label: String }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // A model that first forgets the field, then gets it right when told what was wrong.
/// let answers = ["{}", r#"{"label": "urgent"}"#];
/// let repaired = Repair::new(3)
///     .run::<Label, _, _, std::convert::Infallible>(|ask: Ask| async move {
///         if let Some(reask) = &ask.reask {
///             assert!(reask.prompt.contains("\"label\" is a required property"));
///         }
///         Ok(answers[ask.attempt as usize - 1].to_owned())
///     })
///     .await
///     .unwrap();
/// assert_eq!(repaired.value, Label { label: "urgent".into() });
/// assert_eq!(repaired.attempts.len(), 2);
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repair {
    max_attempts: u32,
}

impl Default for Repair {
    /// Three attempts: the question and two re-asks.
    fn default() -> Self {
        Repair { max_attempts: 3 }
    }
}

/// One call of the model, as the repair loop asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ask {
    /// 1 for the first question, 2 for the first re-ask, ...
    pub attempt: u32,
    /// For a re-ask: the previous answer and what to say about it.
    pub reask: Option<Reask>,
}

/// What a re-ask carries: append `previous_answer` as the assistant's turn and `prompt` as the
/// user's, then ask again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reask {
    /// The answer that failed.
    pub previous_answer: String,
    /// [`SchemaError::repair_prompt`] of its failure.
    pub prompt: String,
}

/// One attempt, for the journal and the logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attempt {
    /// 1-based.
    pub attempt: u32,
    /// The model's answer, as received.
    pub answer: String,
    /// Why it was refused; `None` for the accepted answer.
    pub error: Option<String>,
}

/// A value that passed the gate, with every attempt it took.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Repaired<T> {
    /// The value.
    pub value: T,
    /// Every attempt, the accepted one last.
    pub attempts: Vec<Attempt>,
}

/// The repair loop gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepairError<E> {
    /// Asking the model failed (a transport error, a refusal): not retried here.
    #[error("asking the model failed on attempt {attempt}: {source}")]
    Ask {
        /// The attempt that failed.
        attempt: u32,
        /// The caller's error.
        #[source]
        source: E,
        /// The attempts before it.
        attempts: Vec<Attempt>,
    },
    /// Every attempt's answer failed the gate.
    #[error("no valid answer after {} attempts: {last}", .attempts.len())]
    Exhausted {
        /// The last answer's failure.
        #[source]
        last: SchemaError,
        /// Every attempt.
        attempts: Vec<Attempt>,
    },
}

impl<E> RepairError<E> {
    /// Every attempt made.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            RepairError::Ask { attempts, .. } | RepairError::Exhausted { attempts, .. } => attempts,
        }
    }
}

impl Repair {
    /// At most `max_attempts` calls of the model in all (at least 1).
    pub fn new(max_attempts: u32) -> Self {
        Repair { max_attempts: max_attempts.max(1) }
    }

    /// Runs the loop: `ask` is called with the attempt number and, from the second call on,
    /// the failed answer and the repair prompt.
    pub async fn run<T, F, Fut, E>(&self, mut ask: F) -> Result<Repaired<T>, RepairError<E>>
    where
        T: JsonSchema + DeserializeOwned + 'static,
        F: FnMut(Ask) -> Fut,
        Fut: Future<Output = Result<String, E>>,
    {
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut reask = None;
        for attempt in 1..=self.max_attempts {
            let answer = match ask(Ask { attempt, reask: reask.take() }).await {
                Ok(answer) => answer,
                Err(source) => return Err(RepairError::Ask { attempt, source, attempts }),
            };
            match super::parse::<T>(&answer) {
                Ok(value) => {
                    tracing::debug!(attempt, "schema gate accepted the answer");
                    attempts.push(Attempt { attempt, answer, error: None });
                    return Ok(Repaired { value, attempts });
                }
                Err(error) => {
                    tracing::info!(attempt, error = %error, "schema gate refused the answer");
                    attempts.push(Attempt {
                        attempt,
                        answer: answer.clone(),
                        error: Some(error.to_string()),
                    });
                    if attempt == self.max_attempts {
                        return Err(RepairError::Exhausted { last: error, attempts });
                    }
                    reask = Some(Reask { previous_answer: answer, prompt: error.repair_prompt() });
                }
            }
        }
        unreachable!("the loop returns on its last attempt")
    }
}
