//! The mail notifier: each [`Notification`] as a plain-text mail through a [`Mailer`]'s
//! transport.

use std::time::Duration;

use async_trait::async_trait;
use lettre::Message;
use lettre::message::header::ContentType;

use super::mailer::{Mailer, Receipt};
use super::one_line;
use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Fault, RetryPolicy};
use crate::notify::Notification;

/// A notifier that mails every [`Notification`] from and to the addresses of `mailer`,
/// through its transport (SMTP, or a file outbox). The subject is
/// `[steadfast] <event>: <agent> run <id>`; the body lists what the notification holds, and
/// a link to the run on the dashboard when [`link`](Self::link) is given. Every text from a
/// run (its agent's name, the reason, the error) is put on one line before it reaches a
/// header, so none can add one. Sending is journaled like the mailer's: a retry after a
/// recorded send does not send again, and a copy sent twice carries the same `Message-ID`.
#[derive(Clone, Debug)]
pub struct MailNotifier {
    name: String,
    mailer: Mailer,
    link: Option<String>,
}

impl MailNotifier {
    /// A notifier named `mail-notifier` sending through `mailer`.
    pub fn new(mailer: Mailer) -> Self {
        MailNotifier { name: "mail-notifier".into(), mailer, link: None }
    }

    /// Registered under `name` instead.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Links each run to the dashboard at `base` (`http://127.0.0.1:7420`, say): the mail
    /// then shows `<base>/ui/runs/<id>`.
    #[must_use]
    pub fn link(mut self, base: impl Into<String>) -> Self {
        self.link = Some(base.into().trim_end_matches('/').to_owned());
        self
    }

    fn message(&self, id: &str, message_id: &str, n: &Notification) -> Result<Message, AgentError> {
        let subject = format!("[steadfast] {}", one_line(&n.summary(), 150));
        let mut body = format!("Notification {id}\n\nEvent:  {}\nAgent:  {}\n", n.event, n.agent);
        if let Some(run) = n.run {
            body.push_str(&format!("Run:    {run}\n"));
            if let Some(base) = &self.link {
                body.push_str(&format!("Open:   {base}/ui/runs/{run}\n"));
            }
        }
        if let Some(state) = n.state {
            body.push_str(&format!("State:  {state}\n"));
        }
        if let Some(actor) = &n.actor {
            body.push_str(&format!("By:     {actor}\n"));
        }
        body.push_str(&format!("At:     {}\n\nWhy: {}\n", n.at, n.reason));
        if let Some(error) = &n.error {
            body.push_str(&format!("\nError ({}): {}\n", error.fault, error.message));
            for cause in &error.chain {
                body.push_str(&format!("  caused by: {cause}\n"));
            }
        }
        self.mailer
            .envelope(subject, message_id)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| {
                AgentError::from_source(Fault::Permanent, e)
                    .context("building the notification mail")
            })
    }
}

#[async_trait]
impl Agent for MailNotifier {
    type Input = Notification;
    type Output = Receipt;

    fn name(&self) -> &str {
        &self.name
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(8)
            .backoff(Duration::from_secs(2), Duration::from_secs(15 * 60))
    }

    async fn run(
        &self,
        ctx: &mut Context,
        notification: Notification,
    ) -> Result<Outcome<Receipt>, AgentError> {
        let message_id = Mailer::message_id(ctx);
        let message = self.message(ctx.idempotency_key(), &message_id, &notification)?;
        Ok(Outcome::Done(self.mailer.send_once(ctx, message, message_id).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::Transport;
    use crate::clock::Timestamp;

    #[test]
    fn a_hostile_agent_name_or_reason_cannot_add_a_header() {
        let mailer =
            Mailer::new(Transport::outbox("o"), "a@example.com", ["b@example.com"]).unwrap();
        let notifier = MailNotifier::new(mailer).link("http://127.0.0.1:7420/");
        let n = Notification::alarm(
            "x\r\nBcc: evil@example.com",
            "why\r\nBcc: e@x",
            Timestamp::from_millis(5),
        );
        let message = notifier.message("alarm:x:1", "<id@steadfast>", &n).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let headers = text.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc")), "{headers}");
        assert!(
            headers.contains("Subject: [steadfast] alarm: x Bcc: evil@example.com"),
            "{headers}"
        );
    }
}
