//! The mailer: the digest by SMTP, or into a file outbox.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, MessageBuilder, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::one_line;
use super::reporter::Report;
use super::secret::Secret;
use crate::agent::{Agent, Context, Outcome};
use crate::fault::{AgentError, Fault, RetryPolicy};

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text: only for a relay on the same machine or network.
    None,
    /// Plain text upgraded with `STARTTLS`, required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Where mail goes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Transport {
    /// `.eml` files in a folder, one per message, named by the effect key: the default, for
    /// trying things out and for systems that pick mail up from a folder.
    Outbox(PathBuf),
    /// An SMTP server.
    Smtp {
        /// Host name (also the name checked in its TLS certificate).
        host: String,
        /// Port.
        port: u16,
        /// Connection security.
        security: SmtpSecurity,
        /// User name and password, if the server wants them.
        credentials: Option<(String, Secret)>,
        /// A PEM file of extra root certificates to trust (a private CA), besides the
        /// platform's.
        ca: Option<PathBuf>,
    },
}

impl Transport {
    /// A file outbox in `dir` (created if missing).
    pub fn outbox(dir: impl Into<PathBuf>) -> Self {
        Transport::Outbox(dir.into())
    }

    /// An SMTP server without credentials.
    pub fn smtp(host: impl Into<String>, port: u16, security: SmtpSecurity) -> Self {
        Transport::Smtp { host: host.into(), port, security, credentials: None, ca: None }
    }

    /// SMTP from the environment: `STEADFAST_SMTP_HOST`, `STEADFAST_SMTP_PORT` (587),
    /// `STEADFAST_SMTP_SECURITY` (`starttls`, `tls` or `none`; `starttls` by default) and,
    /// optionally, `STEADFAST_SMTP_USER` and `STEADFAST_SMTP_PASSWORD`, and
    /// `STEADFAST_SMTP_CA` (a PEM file of extra root certificates).
    pub fn smtp_from_env() -> Result<Self, String> {
        let host = std::env::var("STEADFAST_SMTP_HOST")
            .map_err(|_| "set STEADFAST_SMTP_HOST to the SMTP server".to_owned())?;
        let port = match std::env::var("STEADFAST_SMTP_PORT") {
            Ok(p) => p.parse().map_err(|_| format!("STEADFAST_SMTP_PORT `{p}` is not a port"))?,
            Err(_) => 587,
        };
        let security = match std::env::var("STEADFAST_SMTP_SECURITY").as_deref() {
            Ok("starttls") | Err(_) => SmtpSecurity::StartTls,
            Ok("tls") => SmtpSecurity::Tls,
            Ok("none") => SmtpSecurity::None,
            Ok(other) => {
                return Err(format!(
                    "STEADFAST_SMTP_SECURITY `{other}`: use starttls, tls or none"
                ));
            }
        };
        let credentials = match (
            std::env::var("STEADFAST_SMTP_USER").ok(),
            Secret::from_env("STEADFAST_SMTP_PASSWORD"),
        ) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => {
                return Err(
                    "set both STEADFAST_SMTP_USER and STEADFAST_SMTP_PASSWORD, or neither".into()
                );
            }
        };
        let ca = std::env::var_os("STEADFAST_SMTP_CA").map(PathBuf::from);
        Ok(Transport::Smtp { host, port, security, credentials, ca })
    }

    /// Logs in with `user` and `password`.
    #[must_use]
    pub fn credentials(self, user: impl Into<String>, password: Secret) -> Self {
        match self {
            Transport::Smtp { host, port, security, ca, .. } => Transport::Smtp {
                host,
                port,
                security,
                credentials: Some((user.into(), password)),
                ca,
            },
            outbox => outbox,
        }
    }

    /// Also trusts the root certificates in the PEM file `path` (a private CA).
    #[must_use]
    pub fn ca(self, path: impl Into<PathBuf>) -> Self {
        match self {
            Transport::Smtp { host, port, security, credentials, .. } => {
                Transport::Smtp { host, port, security, credentials, ca: Some(path.into()) }
            }
            outbox => outbox,
        }
    }

    fn describe(&self) -> String {
        match self {
            Transport::Outbox(dir) => format!("outbox {}", dir.display()),
            Transport::Smtp { host, port, .. } => format!("smtp {host}:{port}"),
        }
    }
}

/// A sender or recipient that is not a mail address.
#[derive(Debug, thiserror::Error)]
#[error("`{address}` is not a mail address: {source}")]
pub struct AddressError {
    address: String,
    source: lettre::address::AddressError,
}

/// What was sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// The message's `Message-ID` (the same for every attempt of the run).
    pub message_id: String,
    /// The subject.
    pub subject: String,
    /// The recipients.
    pub recipients: Vec<String>,
    /// Where it went (`outbox <dir>` or `smtp <host>:<port>`).
    pub transport: String,
    /// The `.eml` file, for the outbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether a message went out: an empty digest is not mailed.
    #[serde(default = "sent_by_default")]
    pub sent: bool,
}

fn sent_by_default() -> bool {
    true
}

/// Mails the digest (unless it is empty): a `multipart/alternative` message with the Markdown as text and the
/// HTML, its subject the digest's title (and top headline, stripped of control characters so
/// an item title cannot add a header). The `Message-ID` is made from the effect key, the same
/// for every attempt of the run: sending is journaled, so a retry does not send again, and a
/// copy sent twice (a crash between sending and journaling) carries the same `Message-ID`.
#[derive(Clone, Debug)]
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Mailer {
    /// A mailer sending from `from` to `to` through `transport`.
    pub fn new<'a>(
        transport: Transport,
        from: &str,
        to: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, AddressError> {
        let parse = |address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|source| AddressError { address: address.to_owned(), source })
        };
        let to = to.into_iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        Ok(Mailer { transport, from: parse(from)?, to })
    }

    fn message(&self, report: &Report, message_id: &str) -> Result<Message, AgentError> {
        let mut subject = one_line(&report.title, 150);
        if let Some(headline) = &report.headline {
            subject = format!("{subject}: {}", one_line(headline, 150));
        }
        self.envelope(subject, message_id)
            .multipart(MultiPart::alternative_plain_html(
                report.markdown.clone(),
                report.html.clone(),
            ))
            .map_err(|e| AgentError::from_source(Fault::Permanent, e).context("building the mail"))
    }

    /// A message from and to this mailer's addresses, with `subject` (one line: the caller
    /// strips it) and `message_id`.
    pub(super) fn envelope(&self, subject: String, message_id: &str) -> MessageBuilder {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(message_id.to_owned()));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
    }

    /// The `Message-ID` of the mail of the run `ctx` runs: made from its effect key, the same
    /// for every attempt.
    pub(super) fn message_id(ctx: &Context) -> String {
        format!("<{}@steadfast>", ctx.effect_key("send").replace('/', "."))
    }

    /// Sends `message` once for the run (the effect `send`, journaled: a retry after a
    /// recorded send does not send again), and says what went where.
    pub(super) async fn send_once(
        &self,
        ctx: &mut Context,
        message: Message,
        message_id: String,
    ) -> Result<Receipt, AgentError> {
        let subject = message.headers().get_raw("Subject").map(str::to_owned).unwrap_or_default();
        let path = ctx.effect("send", |key| async move { self.send(message, &key).await }).await?;
        Ok(self.receipt(message_id, subject, path, true))
    }

    fn receipt(
        &self,
        message_id: String,
        subject: String,
        path: Option<String>,
        sent: bool,
    ) -> Receipt {
        Receipt {
            message_id,
            subject,
            recipients: self.to.iter().map(|m| m.to_string()).collect(),
            transport: self.transport.describe(),
            path,
            sent,
        }
    }

    async fn send(&self, message: Message, key: &str) -> Result<Option<String>, AgentError> {
        match &self.transport {
            Transport::Outbox(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    AgentError::from(e).context(format!("creating the outbox {}", dir.display()))
                })?;
                let path = dir.join(format!("{}.eml", key.replace(['/', '\\', ':'], "-")));
                super::write_atomically(&[(&path, &message.formatted())]).await?;
                Ok(Some(path.display().to_string()))
            }
            Transport::Smtp { host, port, security, credentials, ca } => {
                let tls = |host: &str| {
                    let tls_error =
                        |e| AgentError::from_source(Fault::Permanent, e).context("setting up TLS");
                    let mut builder = TlsParameters::builder(host.to_owned());
                    if let Some(ca) = ca {
                        let pem = std::fs::read(ca).map_err(|e| {
                            AgentError::from(e).context(format!("reading {}", ca.display()))
                        })?;
                        builder = builder
                            .add_root_certificate(Certificate::from_pem(&pem).map_err(tls_error)?);
                    }
                    builder.build().map_err(tls_error)
                };
                let tls = match security {
                    SmtpSecurity::None => Tls::None,
                    SmtpSecurity::StartTls => Tls::Required(tls(host)?),
                    SmtpSecurity::Tls => Tls::Wrapper(tls(host)?),
                };
                let mut smtp =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
                        .port(*port)
                        .tls(tls)
                        .timeout(Some(Duration::from_secs(30)));
                if let Some((user, password)) = credentials {
                    smtp = smtp
                        .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
                }
                smtp.build().send(message).await.map_err(|e| {
                    let fault = smtp_fault(&e);
                    AgentError::from_source(fault, e)
                        .context(format!("sending through {host}:{port}"))
                })?;
                Ok(None)
            }
        }
    }
}

/// 4xx replies, timeouts and connection failures are transient; 5xx replies and TLS
/// failures permanent, a refused certificate included (lettre reports it as a connection
/// error; a retry will not make the certificate trusted).
fn smtp_fault(error: &lettre::transport::smtp::Error) -> Fault {
    if error.is_permanent()
        || error.is_tls()
        || error.is_client()
        || super::refused_certificate(error)
    {
        Fault::Permanent
    } else {
        Fault::Transient
    }
}

#[async_trait]
impl Agent for Mailer {
    type Input = Report;
    type Output = Receipt;

    fn name(&self) -> &str {
        "mailer"
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(6)
            .backoff(Duration::from_secs(2), Duration::from_secs(300))
    }

    /// One mailbox at a time: two digests never race through the same transport.
    fn concurrency_key(&self, _report: &Report) -> Option<String> {
        Some(format!("mailer:{}", self.transport.describe()))
    }

    async fn run(&self, ctx: &mut Context, report: Report) -> Result<Outcome<Receipt>, AgentError> {
        let message_id = Self::message_id(ctx);
        let message = self.message(&report, &message_id)?;
        if report.total > 0 {
            return Ok(Outcome::Done(self.send_once(ctx, message, message_id).await?));
        }
        tracing::info!(parent: ctx.span(), "the digest is empty: nothing to mail");
        let subject = message.headers().get_raw("Subject").map(str::to_owned).unwrap_or_default();
        Ok(Outcome::Done(self.receipt(message_id, subject, None, false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(title: &str, headline: Option<&str>) -> Report {
        Report {
            title: title.into(),
            headline: headline.map(Into::into),
            total: 1,
            counts: Default::default(),
            markdown: "# x".into(),
            html: "<h1>x</h1>".into(),
            markdown_path: "x.md".into(),
            html_path: "x.html".into(),
        }
    }

    #[test]
    fn a_title_cannot_add_a_header() {
        let mailer =
            Mailer::new(Transport::outbox("o"), "a@example.com", ["b@example.com"]).unwrap();
        let message = mailer
            .message(
                &report("Digest", Some("Hi\r\nBcc: evil@example.com\r\n\r\nbody")),
                "<id@steadfast>",
            )
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let headers = text.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc")), "{headers}");
        assert!(headers.contains("Message-ID: <id@steadfast>"), "{headers}");
    }

    #[test]
    fn bad_addresses_are_named() {
        let err =
            Mailer::new(Transport::outbox("o"), "not an address", ["b@example.com"]).unwrap_err();
        assert!(err.to_string().starts_with("`not an address` is not a mail address"), "{err}");
    }

    #[test]
    fn debug_hides_the_password() {
        let t = Transport::smtp("h", 587, SmtpSecurity::StartTls)
            .credentials("u", Secret::new("pw-123"));
        assert!(!format!("{t:?}").contains("pw-123"));
    }
}
