//! Notifications: what operators are told when a run needs them (held for review, dead
//! letter) or when work stalls (the silent-failure alarm), delivered by agents as durable
//! runs.
//!
//! A notification is a run of a *notifier*: any registered agent whose input is
//! [`Notification`] (the built-in ones are `steadfast::agents::Webhook` and
//! `steadfast::agents::MailNotifier`), subscribed with
//! [`RuntimeBuilder::notify`](crate::runtime::RuntimeBuilder::notify). The move that holds
//! a run for review or dead-letters it creates the notifier's run **in the same atomic write**
//! ([`Transition::follow_up`](crate::store::Transition::follow_up)): a crash cannot keep the
//! move and lose its notification, and a receiver that is down loses nothing: the delivery
//! is retried with backoff and ends in the dead letter queue like any run.
//!
//! Each notification has an id, its run's idempotency key, unique per event:
//! `review:<run>:<move>` and `dead_letter:<run>:<move>` (the move's sequence number in the
//! run's history, so a run held twice is notified twice), `alarm:<agent>:<since>` (when the
//! oldest work the alarm is about was created, in ms). A delivery cut off by a crash is
//! made again under the same id: receivers deduplicate by it.
//!
//! A pipeline run and its stages are agents of their own: a stage that dies and the pipeline
//! run it ends are two notifications (narrow with [`Subscription::agents`]).
//!
//! Notifiers are never notified about their own runs (a dead webhook would otherwise notify
//! itself without end); their dead letters are on the dashboard and in `steadfast dlq list`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::fault::ErrorInfo;
use crate::lifecycle::{RunId, RunState};

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A run was held for review (`needs_review`): an operator approves, rejects or
    /// resolves it.
    Review,
    /// A run entered the dead letter queue (`failed_permanent`).
    DeadLetter,
    /// The silent-failure alarm was raised for an agent: due work older than its window, and
    /// no success within it.
    Alarm,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 3] = [Event::Review, Event::DeadLetter, Event::Alarm];

    /// Its name: `review`, `dead_letter` or `alarm` (how the id of its notifications starts).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Review => "review",
            Event::DeadLetter => "dead_letter",
            Event::Alarm => "alarm",
        }
    }

    /// The event a run entering `state` raises, if any.
    pub fn of_state(state: RunState) -> Option<Event> {
        match state {
            RunState::NeedsReview => Some(Event::Review),
            RunState::FailedPermanent => Some(Event::DeadLetter),
            _ => None,
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Event {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Event::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not an event: use review, dead_letter or alarm"))
    }
}

/// One notification: the input of a notifier's run. Holds no run input or output (they may
/// carry private data); receivers look the run up by its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[non_exhaustive]
pub struct Notification {
    /// What happened.
    pub event: Event,
    /// The agent it happened to.
    pub agent: String,
    /// The run, for a review item or a dead letter.
    pub run: Option<RunId>,
    /// The state the run entered, for a review item or a dead letter.
    pub state: Option<RunState>,
    /// Why, in words: the move's reason, or the alarm's.
    pub reason: String,
    /// The failure behind it, with its class and chain, if any.
    pub error: Option<ErrorInfo>,
    /// Who made the move (`system`, `worker:…`, `operator:…`), for a review item or a dead
    /// letter.
    pub actor: Option<String>,
    /// When, by the store's clock.
    pub at: Timestamp,
}

impl Notification {
    /// The notification of `run` (of `agent`) entering `state` by `actor`, with `reason`, or
    /// `None` if entering it raises no event.
    pub fn of_move(
        agent: &str,
        run: RunId,
        state: RunState,
        reason: &str,
        error: Option<ErrorInfo>,
        actor: &crate::store::Actor,
        at: Timestamp,
    ) -> Option<Self> {
        Some(Notification {
            event: Event::of_state(state)?,
            agent: agent.to_owned(),
            run: Some(run),
            state: Some(state),
            reason: reason.to_owned(),
            error,
            actor: Some(actor.to_string()),
            at,
        })
    }

    /// The alarm raised for `agent`, with `reason`.
    pub fn alarm(agent: &str, reason: &str, at: Timestamp) -> Self {
        Notification {
            event: Event::Alarm,
            agent: agent.to_owned(),
            run: None,
            state: None,
            reason: reason.to_owned(),
            error: None,
            actor: None,
            at,
        }
    }

    /// A one-line summary (for a mail subject or a chat message): `review: reader run 01J…`.
    pub fn summary(&self) -> String {
        match self.run {
            Some(run) => format!("{}: {} run {run}", self.event, self.agent),
            None => format!("{}: {}", self.event, self.agent),
        }
    }
}

/// Which notifications a notifier gets: by event and by agent. By default every event of
/// every agent (but notifiers').
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscription {
    /// Only these events; empty means all.
    pub events: Vec<Event>,
    /// Only about these agents (registered names, pipelines and stages included); empty
    /// means all.
    pub agents: Vec<String>,
}

impl Subscription {
    /// Every event of every agent.
    pub fn all() -> Self {
        Subscription::default()
    }

    /// Only these events.
    #[must_use]
    pub fn events(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.events = events.into_iter().collect();
        self
    }

    /// Only about these agents.
    #[must_use]
    pub fn agents<I, S>(mut self, agents: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.agents = agents.into_iter().map(Into::into).collect();
        self
    }

    /// In words: `review, dead_letter about reader, writer`, `every event about every agent`.
    pub fn describe(&self) -> String {
        let events: Vec<&str> = self.events.iter().map(|e| e.as_str()).collect();
        let events = if events.is_empty() { "every event".to_owned() } else { events.join(", ") };
        let agents =
            if self.agents.is_empty() { "every agent".to_owned() } else { self.agents.join(", ") };
        format!("{events} about {agents}")
    }

    /// Whether it takes `event` of `agent`.
    pub fn wants(&self, event: Event, agent: &str) -> bool {
        (self.events.is_empty() || self.events.contains(&event))
            && (self.agents.is_empty() || self.agents.iter().any(|a| a == agent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_names() {
        for event in Event::ALL {
            assert_eq!(event.as_str().parse::<Event>(), Ok(event));
            assert_eq!(serde_json::to_value(event).unwrap(), event.as_str());
        }
        assert!("reviews".parse::<Event>().unwrap_err().contains("dead_letter"));
    }

    #[test]
    fn a_subscription_filters_by_event_and_agent() {
        let all = Subscription::all();
        assert!(all.wants(Event::Alarm, "x"));
        let some = Subscription::all().events([Event::DeadLetter]).agents(["reader"]);
        assert!(some.wants(Event::DeadLetter, "reader"));
        assert!(!some.wants(Event::Review, "reader"));
        assert!(!some.wants(Event::DeadLetter, "writer"));
        assert_eq!(all.describe(), "every event about every agent");
        assert_eq!(some.describe(), "dead_letter about reader");
    }

    #[test]
    fn only_review_and_dead_letter_moves_notify() {
        let at = Timestamp::from_millis(1);
        let actor = crate::store::Actor::System;
        let run = RunId::new();
        let of = |state| Notification::of_move("a", run, state, "why", None, &actor, at);
        assert_eq!(of(RunState::NeedsReview).unwrap().event, Event::Review);
        assert_eq!(
            of(RunState::FailedPermanent).unwrap().summary(),
            format!("dead_letter: a run {run}")
        );
        assert!(of(RunState::Succeeded).is_none() && of(RunState::FailedTransient).is_none());
    }
}
