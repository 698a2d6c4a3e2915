//! The notifications of `serve` and `work`: a signed webhook and mail, as durable runs of
//! built-in notifiers (see [`crate::notify`]).

use crate::agents::{MailNotifier, Mailer, Secret, Transport, Webhook};
use crate::notify::{Event, Subscription};
use crate::runtime::RuntimeBuilder;

use super::CliError;

/// The environment variable that holds the webhook's signing secret.
pub(crate) const WEBHOOK_SECRET_ENV: &str = "STEADFAST_WEBHOOK_SECRET";

/// Where `serve` and `work` send notifications. Its `Debug` shows the webhook's origin only:
/// a webhook URL's path or query is often a token.
#[derive(Default, clap::Args)]
pub(super) struct NotifyArgs {
    /// POST a signed JSON notification to URL for every run held for review, every dead
    /// letter and (with serve) every alarm (the HMAC-SHA256 secret, at least 16 bytes, from
    /// $STEADFAST_WEBHOOK_SECRET). Delivered as runs of the agent `webhook`, retried with
    /// backoff while the receiver is down. A URL whose path or query is a token is better
    /// given in $STEADFAST_WEBHOOK_URL or --webhook-file: a command line is visible to every
    /// user of the machine.
    #[arg(long, value_name = "URL", env = "STEADFAST_WEBHOOK_URL", hide_env_values = true)]
    webhook: Option<String>,
    /// Read the webhook's URL from the first line of FILE and its secret from the second (else
    /// from $STEADFAST_WEBHOOK_SECRET). The file must be yours, readable by you only.
    #[arg(long, value_name = "FILE", conflicts_with = "webhook")]
    webhook_file: Option<std::path::PathBuf>,
    /// Also mail every notification to ADDRESS (repeat for several), as runs of the agent
    /// `mail-notifier`: through SMTP when $STEADFAST_SMTP_HOST is set (see the mailer), else
    /// into the folder `notifications` of the data directory.
    #[arg(long = "notify-mail", value_name = "ADDRESS")]
    notify_mail: Vec<String>,
    /// The sender of the notification mails.
    #[arg(long, value_name = "ADDRESS", default_value = "steadfast@localhost")]
    notify_from: String,
    /// Only these events (repeat; `review`, `dead_letter`, `alarm`; default all).
    #[arg(long = "notify-event", value_name = "EVENT")]
    notify_events: Vec<Event>,
    /// Only about these agents (repeat; default all).
    #[arg(long = "notify-agent", value_name = "AGENT")]
    notify_agents: Vec<String>,
}

impl std::fmt::Debug for NotifyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let webhook = self.webhook.as_deref().map(|url| match url::Url::parse(url) {
            Ok(url) => url.origin().ascii_serialization(),
            Err(_) => "(not a URL)".to_owned(),
        });
        f.debug_struct("NotifyArgs")
            .field("webhook", &webhook)
            .field("webhook_file", &self.webhook_file)
            .field("notify_mail", &self.notify_mail)
            .field("notify_from", &self.notify_from)
            .field("notify_events", &self.notify_events)
            .field("notify_agents", &self.notify_agents)
            .finish()
    }
}

impl NotifyArgs {
    /// The webhook's URL, and its secret when a file gives it: `--webhook` (or
    /// `$STEADFAST_WEBHOOK_URL`), else `--webhook-file`.
    fn webhook(&self) -> Result<Option<(String, Option<Secret>)>, CliError> {
        if let Some(url) = &self.webhook {
            return Ok(Some((url.clone(), None)));
        }
        let Some(path) = &self.webhook_file else { return Ok(None) };
        let text = super::private::read_secret_file(path, "webhook file")?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let url = lines.next().ok_or_else(|| {
            CliError::usage(format!("the webhook file {} is empty", path.display()))
        })?;
        Ok(Some((url.to_owned(), lines.next().map(Secret::new))))
    }

    /// Registers and subscribes the notifiers asked for; `link` is the dashboard's address,
    /// if one serves.
    pub(super) fn apply(
        &self,
        mut builder: RuntimeBuilder,
        data_dir: &std::path::Path,
        link: Option<&str>,
    ) -> Result<(RuntimeBuilder, Vec<String>), CliError> {
        let subscription = Subscription::all()
            .events(self.notify_events.iter().copied())
            .agents(self.notify_agents.iter().cloned());
        let mut shown = Vec::new();
        if let Some((url, secret)) = self.webhook()? {
            let secret = secret.or_else(|| Secret::from_env(WEBHOOK_SECRET_ENV)).ok_or_else(|| {
                CliError::usage(format!(
                    "--webhook needs its signing secret in ${WEBHOOK_SECRET_ENV} or on the second line of --webhook-file (at least 16 bytes)"
                ))
            })?;
            let webhook = Webhook::new(&url, secret)
                .map_err(|e| CliError::usage(format!("--webhook: {e}")))?;
            shown.push(format!("webhook to {}", webhook.destination()));
            builder = builder.register(webhook).notify("webhook", subscription.clone());
        } else if std::env::var_os(WEBHOOK_SECRET_ENV).is_some() {
            tracing::warn!("{WEBHOOK_SECRET_ENV} is set but no --webhook is given: no webhook");
        }
        if !self.notify_mail.is_empty() {
            let transport = match std::env::var_os("STEADFAST_SMTP_HOST") {
                Some(_) => Transport::smtp_from_env().map_err(CliError::usage)?,
                None => Transport::outbox(data_dir.join("notifications")),
            };
            let to = self.notify_mail.iter().map(String::as_str);
            let mailer = Mailer::new(transport, &self.notify_from, to)
                .map_err(|e| CliError::usage(format!("--notify-mail: {e}")))?;
            shown.push(format!("mail to {}", self.notify_mail.join(", ")));
            let mut notifier = MailNotifier::new(mailer);
            if let Some(link) = link {
                notifier = notifier.link(link);
            }
            builder = builder.register(notifier).notify("mail-notifier", subscription);
        }
        Ok((builder, shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_webhooks_origin_only() {
        let args = NotifyArgs {
            webhook: Some("https://hooks.example.com/services/T0/B0/SECRET?token=x".into()),
            ..NotifyArgs::default()
        };
        let shown = format!("{args:?}");
        assert!(shown.contains("https://hooks.example.com"), "{shown}");
        assert!(!shown.contains("SECRET") && !shown.contains("token"), "{shown}");
    }
}
