//! Notifications as durable runs (see [`crate::notify`]): the runtime adds a notifier's run to
//! every move that raises an event its subscription takes, in the move's own write.

use serde_json::Value;

use super::{RuntimeError, Shared};
use crate::clock::Timestamp;
use crate::notify::{Event, Notification, Subscription};
use crate::store::{NewRun, Transition};

/// The subscribed notifiers, by registered name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Notices {
    subscribed: Vec<(String, Subscription)>,
}

impl Notices {
    /// Checks that every subscribed notifier is registered and takes a [`Notification`].
    pub(crate) fn new(
        subscribed: Vec<(String, Subscription)>,
        agents: &std::collections::HashMap<String, super::Registered>,
    ) -> Result<Self, RuntimeError> {
        let wanted = crate::schema::schema_hash::<Notification>();
        for (name, _) in &subscribed {
            let Some(registered) = agents.get(name) else {
                return Err(RuntimeError::InvalidRequest(format!(
                    "notifier `{name}` is not registered: register it before subscribing it"
                )));
            };
            if registered.agent.input_schema() != wanted {
                return Err(RuntimeError::InvalidRequest(format!(
                    "agent `{name}` cannot deliver notifications: its input is not \
                     `steadfast::notify::Notification`"
                )));
            }
        }
        Ok(Notices { subscribed })
    }

    /// The subscription of notifier `agent`, if it is one.
    pub(crate) fn of(&self, agent: &str) -> Option<&Subscription> {
        self.subscribed.iter().find(|(name, _)| name == agent).map(|(_, sub)| sub)
    }

    /// Whether no notifier is subscribed.
    pub(crate) fn is_empty(&self) -> bool {
        self.subscribed.is_empty()
    }

    /// Whether `agent` is a subscribed notifier (never notified about itself).
    pub(crate) fn is_notifier(&self, agent: &str) -> bool {
        self.subscribed.iter().any(|(name, _)| name == agent)
    }

    /// The notifiers that take `event` of `agent`.
    fn subscribers(&self, event: Event, agent: &str) -> impl Iterator<Item = &str> {
        let agent_is_notifier = self.is_notifier(agent);
        self.subscribed
            .iter()
            .filter(move |(_, sub)| !agent_is_notifier && sub.wants(event, agent))
            .map(|(name, _)| name.as_str())
    }
}

impl Shared {
    /// A notifier's run of `notification` under `key`.
    fn notice(&self, notifier: &str, key: String, notification: &Notification) -> NewRun {
        let input = serde_json::to_value(notification).unwrap_or(Value::Null);
        let mut new = NewRun::new(notifier, key, input);
        if let Some(registered) = self.agents.get(notifier) {
            new = new.schemas(registered.agent.input_schema(), registered.agent.output_schema());
        }
        new
    }

    /// `transition` of a run of `agent`, with the notifiers' runs of the event it raises as
    /// its follow-ups (keyed `<event>:<run>`, to which the store adds the move's number).
    pub(crate) fn with_notices(&self, mut transition: Transition, agent: &str) -> Transition {
        let Some(event) = Event::of_state(transition.to) else { return transition };
        let mut notification = None;
        for notifier in self.notices.subscribers(event, agent) {
            let notification = notification.get_or_insert_with(|| {
                Notification::of_move(
                    agent,
                    transition.run,
                    transition.to,
                    &transition.reason,
                    transition.error.clone(),
                    &transition.actor,
                    self.store.now(),
                )
                .expect("the state raises an event")
            });
            let key = format!("{event}:{}", transition.run);
            let new = self.notice(notifier, key, notification);
            transition = transition.follow_up(new);
        }
        transition
    }
}

impl super::Runtime {
    /// Whether any notifier is subscribed (see [`RuntimeBuilder::notify`](super::RuntimeBuilder::notify)).
    pub fn has_notifiers(&self) -> bool {
        !self.shared.notices.is_empty()
    }

    /// What the notifier `agent` is subscribed to, if it is one (see
    /// [`RuntimeBuilder::notify`](super::RuntimeBuilder::notify)).
    pub fn subscription(&self, agent: &str) -> Option<&Subscription> {
        self.shared.notices.of(agent)
    }

    /// Submits the runs of the notifiers subscribed to the silent-failure alarm for the
    /// alarm raised for `agent` about work waiting since `since` (when the oldest of it was
    /// created: `steadfast::ops::Raised::since`), keyed `alarm:<agent>:<since in ms>`: one alarm is notified once however
    /// often it is seen, by however many processes, across restarts. Returns how many runs
    /// this call created. `steadfast serve` calls it for every alarm it raises.
    pub async fn notify_alarm(
        &self,
        agent: &str,
        reason: &str,
        since: Timestamp,
    ) -> Result<usize, RuntimeError> {
        let shared = &self.shared;
        let notification = Notification::alarm(agent, reason, shared.store.now());
        let key = format!("{}:{agent}:{}", Event::Alarm, since.as_millis());
        let mut created = 0;
        for notifier in shared.notices.subscribers(Event::Alarm, agent) {
            let new = shared.notice(notifier, key.clone(), &notification);
            created += usize::from(shared.store.create(new).await?.created);
        }
        if created > 0 {
            shared.wake.notify_one();
        }
        Ok(created)
    }
}
