//! Mail: the templates for each code purpose, and a bounded queue drained off the request
//! path by a sender with retries. A mail server that is down never holds up a request: the
//! failure is logged and counted.

use crate::config::{MailConfig, StartTls};
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::store::Purpose;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail setup: {0}")]
    Setup(String),
}

/// A code to deliver.
#[derive(Debug)]
pub struct CodeMail {
    pub to: String,
    pub purpose: Purpose,
    pub code: Secret,
    pub ttl: Duration,
}

/// What the queue carries: a code, or a notice that needs none.
#[derive(Debug)]
enum Mail {
    Code(CodeMail),
    /// To the old address, after the account's address was changed.
    EmailChanged {
        to: String,
    },
}

impl Mail {
    fn to(&self) -> &str {
        match self {
            Mail::Code(m) => &m.to,
            Mail::EmailChanged { to } => to,
        }
    }

    /// The audit event for a delivery.
    fn sent_event(&self) -> &'static str {
        match self {
            Mail::Code(_) => "code_sent",
            Mail::EmailChanged { .. } => "notice_sent",
        }
    }

    /// For the log and the audit trail: the code's purpose, or the notice's name.
    fn kind(&self) -> &'static str {
        match self {
            Mail::Code(m) => m.purpose.as_str(),
            Mail::EmailChanged { .. } => "email_changed",
        }
    }
}

#[derive(Debug, Clone)]
enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(AsyncFileTransport<Tokio1Executor>),
}

#[derive(Debug, Clone, Default)]
struct MailMetrics {
    sent: Counter,
    failed: Counter,
    dropped: Counter,
}

/// The mail service: hands mails to a background sender through a bounded queue.
#[derive(Debug, Clone)]
pub struct Mailer {
    queue: mpsc::Sender<Mail>,
    metrics: MailMetrics,
    log_codes: bool,
}

/// Subject and bodies for a purpose.
fn render(product: &str, purpose: Purpose, code: &str, ttl: Duration) -> (String, String, String) {
    let minutes = ttl.as_secs().div_ceil(60);
    let (subject, intro) = match purpose {
        Purpose::VerifyEmail => (
            "Verify your email address",
            "Use this code to verify your email address",
        ),
        // A second step is never mailed; were it, it would be a sign-in code.
        Purpose::Login | Purpose::SecondStep => ("Your sign-in code", "Use this code to sign in"),
        Purpose::ResetPassword => (
            "Reset your password",
            "Use this code to reset your password",
        ),
        Purpose::ChangeEmail => (
            "Confirm your new email address",
            "Use this code to make this the email address of your account",
        ),
    };
    let subject = format!("{product}: {subject}");
    let text = format!(
        "{intro}:\n\n    {code}\n\nThe code expires in {minutes} minutes and works once.\n\
         If you did not ask for it, ignore this mail: nothing changes without the code.\n\n-- {product}\n"
    );
    let product_html = html_escape(product);
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.5\">\
         <p>{intro}:</p>\
         <p style=\"font-size:28px;font-weight:bold;letter-spacing:4px;font-family:monospace\">{code}</p>\
         <p>The code expires in {minutes} minutes and works once.<br>\
         If you did not ask for it, ignore this mail: nothing changes without the code.</p>\
         <p>&mdash; {product_html}</p></body></html>"
    );
    (subject, text, html)
}

/// Subject and bodies of the notice to an account's old address. It does not name the new
/// one: whoever reads the old mailbox need not learn it.
fn render_email_changed(product: &str) -> (String, String, String) {
    let subject = format!("{product}: your email address was changed");
    let body = "The email address of your account was changed just now. Sign-in codes and \
                password resets go to the new address from now on.";
    let warning = "If you did not make this change, contact the administrators at once.";
    let text = format!("{body}\n\n{warning}\n\n-- {product}\n");
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.5\">\
         <p>{body}</p><p><strong>{warning}</strong></p><p>&mdash; {}</p></body></html>",
        html_escape(product)
    );
    (subject, text, html)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn build_transport(cfg: &MailConfig) -> Result<Transport, MailError> {
    let Some(url) = &cfg.smtp_url else {
        std::fs::create_dir_all(&cfg.outbox_dir)
            .and_then(|()| crate::files::make_private(&cfg.outbox_dir))
            .map_err(|e| {
                MailError::Setup(format!("cannot create {}: {e}", cfg.outbox_dir.display()))
            })?;
        return Ok(Transport::Outbox(AsyncFileTransport::new(&cfg.outbox_dir)));
    };
    let host = url
        .host_str()
        .ok_or_else(|| MailError::Setup("mail.smtp_url has no host".into()))?;
    let implicit = url.scheme() == "smtps";
    let port = url.port().unwrap_or(if implicit { 465 } else { 587 });
    let mut params = TlsParameters::builder(host.to_string());
    if let Some(ca) = &cfg.smtp_ca {
        let pem = std::fs::read(ca)
            .map_err(|e| MailError::Setup(format!("mail.smtp_ca {}: {e}", ca.display())))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| MailError::Setup(format!("mail.smtp_ca: {e}")))?;
        params = params.add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|e| MailError::Setup(e.to_string()))?;
    let tls = match (implicit, cfg.starttls) {
        (true, _) => Tls::Wrapper(params),
        (false, StartTls::Opportunistic) => Tls::Opportunistic(params),
        (false, StartTls::Required) => Tls::Required(params),
        (false, StartTls::Never) => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(cfg.timeout));
    let user = cfg
        .smtp_username
        .clone()
        .or_else(|| (!url.username().is_empty()).then(|| decode(url.username())));
    let pass = cfg
        .smtp_password
        .clone()
        .or_else(|| url.password().map(decode));
    if let (Some(u), Some(p)) = (user, pass) {
        builder = builder.credentials(Credentials::new(u, p));
    }
    Ok(Transport::Smtp(builder.build()))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl Mailer {
    /// Builds the transport and starts the background sender on the current runtime.
    pub fn start(cfg: &MailConfig, metrics: &Metrics) -> Result<Mailer, MailError> {
        let transport = build_transport(cfg)?;
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| MailError::Setup(format!("mail.from: {e}")))?;
        let m = MailMetrics::default();
        metrics.register(
            "mail_sent",
            "Mails handed to the mail server or outbox",
            m.sent.clone(),
        );
        metrics.register(
            "mail_failed",
            "Mails given up on after every attempt",
            m.failed.clone(),
        );
        metrics.register(
            "mail_dropped",
            "Mails refused because the queue was full",
            m.dropped.clone(),
        );
        let (tx, rx) = mpsc::channel(cfg.queue_size.get());
        let sender = Sender {
            transport,
            from,
            product: cfg.product_name.clone(),
            attempts: cfg.attempts,
            metrics: m.clone(),
        };
        tokio::spawn(sender.run(rx));
        Ok(Mailer {
            queue: tx,
            metrics: m,
            log_codes: cfg.log_codes,
        })
    }

    /// Queues a code mail; never waits. A full queue drops the mail (logged and counted).
    pub fn send_code(&self, mail: CodeMail) {
        if self.log_codes {
            // Development only (mail.log_codes): lets a newcomer sign in without a mail server.
            tracing::warn!(target: "authgate::mail", to = %mail.to, purpose = mail.purpose.as_str(), code = mail.code.expose(), "development mode: one-time code");
        }
        self.queue(Mail::Code(mail));
    }

    /// Queues the notice to an account's old address that its address was changed.
    pub fn send_email_changed(&self, old_address: &str) {
        self.queue(Mail::EmailChanged {
            to: old_address.to_string(),
        });
    }

    fn queue(&self, mail: Mail) {
        if let Err(e) = self.queue.try_send(mail) {
            self.metrics.dropped.inc();
            let m = match &e {
                mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
            };
            tracing::error!(target: "audit", event = "mail_dropped", to = m.to(), purpose = m.kind(), "mail queue full; mail dropped");
        }
    }
}

/// The background side: takes mails off the queue, a few at a time, and delivers them.
struct Sender {
    transport: Transport,
    from: Mailbox,
    product: String,
    attempts: u32,
    metrics: MailMetrics,
}

/// Mails delivered at once; SMTP connections are pooled by lettre.
const CONCURRENT_SENDS: usize = 4;

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Mail>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(CONCURRENT_SENDS));
        while let Some(mail) = rx.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let this = this.clone();
            tokio::spawn(async move {
                this.deliver(mail).await;
                drop(permit);
            });
        }
    }

    async fn deliver(&self, mail: Mail) {
        let message = match self.message(&mail) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.failed.inc();
                tracing::error!(target: "audit", event = "mail_failed", to = mail.to(), purpose = mail.kind(), error = %e, "cannot build mail");
                return;
            }
        };
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=self.attempts {
            let result = match &self.transport {
                Transport::Smtp(t) => t
                    .send(message.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Transport::Outbox(t) => t
                    .send(message.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => {
                    self.metrics.sent.inc();
                    tracing::info!(target: "audit", event = mail.sent_event(), to = mail.to(), purpose = mail.kind(), "mail sent");
                    return;
                }
                Err(e) if attempt < self.attempts => {
                    tracing::warn!(to = mail.to(), attempt, error = %e, "mail delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(e) => {
                    self.metrics.failed.inc();
                    tracing::error!(target: "audit", event = "mail_failed", to = mail.to(), purpose = mail.kind(), attempts = attempt, error = %e, "mail delivery failed");
                }
            }
        }
    }

    fn message(&self, mail: &Mail) -> Result<Message, String> {
        let to: Mailbox = mail.to().parse().map_err(|e| format!("recipient: {e}"))?;
        let (subject, text, html) = match mail {
            Mail::Code(m) => render(&self.product, m.purpose, m.code.expose(), m.ttl),
            Mail::EmailChanged { .. } => render_email_changed(&self.product),
        };
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_the_code_and_expiry() {
        for p in [
            Purpose::VerifyEmail,
            Purpose::Login,
            Purpose::ResetPassword,
            Purpose::ChangeEmail,
        ] {
            let (subject, text, html) = render("Acme <&>", p, "123456", Duration::from_secs(600));
            assert!(subject.starts_with("Acme <&>:"));
            assert!(text.contains("123456") && text.contains("10 minutes"));
            assert!(html.contains("123456") && html.contains("Acme &lt;&amp;&gt;"));
        }
    }

    #[tokio::test]
    async fn outbox_receives_an_eml() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MailConfig {
            outbox_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let mailer = Mailer::start(&cfg, &Metrics::new()).unwrap();
        mailer.send_code(CodeMail {
            to: "someone@example.com".into(),
            purpose: Purpose::Login,
            code: Secret::new("424242"),
            ttl: Duration::from_secs(600),
        });
        for _ in 0..100 {
            let files: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .collect();
            if let Some(f) = files.first() {
                let text = std::fs::read_to_string(f.path()).unwrap();
                if text.contains("424242") {
                    assert!(text.contains("someone@example.com"));
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no .eml with the code appeared");
    }
}
