//! `[mail]`: the SMTP relay and the outbox.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Upgrade when the server offers STARTTLS.
    #[default]
    Opportunistic,
    /// Refuse to send unless the connection is upgraded.
    Required,
    /// Plain text (tests, local relays only).
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub from: String,
    /// `smtp://host:port` (STARTTLS per `starttls`) or `smtps://host:port` (implicit TLS);
    /// credentials may be in the URL. When unset, mail goes to `outbox_dir`.
    pub smtp_url: Option<Url>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    pub starttls: StartTls,
    /// Extra CA certificate (PEM) trusted for the SMTP server, besides the webpki roots.
    pub smtp_ca: Option<PathBuf>,
    #[serde(with = "duration::serde_str")]
    pub timeout: Duration,
    /// Each mail is written here as an .eml file when no smtp_url is set.
    pub outbox_dir: PathBuf,
    /// Mails waiting to be sent; when full, new ones are dropped and counted.
    pub queue_size: NonZeroUsize,
    /// Delivery attempts per mail.
    pub attempts: u32,
    /// Also print each code in the log (development only; on by default when running
    /// without a configuration file).
    pub log_codes: bool,
    /// The name used in subjects and bodies.
    pub product_name: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            from: "authgate <no-reply@localhost>".into(),
            smtp_url: None,
            smtp_username: None,
            smtp_password: None,
            starttls: StartTls::Opportunistic,
            smtp_ca: None,
            timeout: Duration::from_secs(10),
            outbox_dir: PathBuf::from("data/outbox"),
            queue_size: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            attempts: 3,
            log_codes: false,
            product_name: "authgate".into(),
        }
    }
}

impl MailConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::key(
                "mail.from",
                "not a mailbox such as \"App <no-reply@example.com>\"",
            ));
        }
        if let Some(u) = &self.smtp_url {
            if !matches!(u.scheme(), "smtp" | "smtps") || u.host_str().is_none() {
                return Err(ConfigError::key(
                    "mail.smtp_url",
                    "must be smtp://host[:port] or smtps://host[:port]",
                ));
            }
        }
        if self.attempts == 0 {
            return Err(ConfigError::key("mail.attempts", "must be at least 1"));
        }
        Ok(())
    }
}
