//! Failure classes: every error an agent returns is routed by its [`Fault`].

use serde::{Deserialize, Serialize};

/// The class of a failure, which decides what happens to the run next.
///
/// | fault | level | routing |
/// |---|---|---|
/// | `Transient` | L1 | `failed_transient`, exponential backoff with full jitter, then `queued`; after `max_attempts`, `failed_permanent` and the dead letter queue |
/// | `Resource` | L2 | `cleanup()`, then `failed_transient` with the resource cooldown; after its budget, `needs_review` |
/// | `Logic` | L3 | compensate completed steps in reverse (saga), then `needs_review` |
/// | `Permanent` | — | `failed_permanent` and the dead letter queue at once |
/// | `Unknown` | — | one short retry, then `failed_permanent` and the dead letter queue |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// L1: a network blip, a rate limit, a timeout. Worth retrying soon.
    Transient,
    /// L2: an exhausted resource (disk, memory, a connection pool). Clean up, cool down.
    Resource,
    /// L3: inconsistent data or a broken business rule. Undo what was done, ask a human.
    Logic,
    /// Retrying cannot help: bad input, bad credentials, a schema mismatch.
    Permanent,
    /// Not classified: retried once, then dead-lettered with the full error chain.
    Unknown,
}

impl Fault {
    /// The fault's serialized name (`transient`, `resource`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Fault::Transient => "transient",
            Fault::Resource => "resource",
            Fault::Logic => "logic",
            Fault::Permanent => "permanent",
            Fault::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
