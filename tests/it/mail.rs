//! A real SMTP server for the tests (mailin-embedded, STARTTLS on), so lettre speaks real SMTP
//! and tests read codes out of the mail that arrived.

#![allow(dead_code)]

use mailin_embedded::{Handler, Response, Server, SslConfig, response};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub data: String,
}

impl Mail {
    /// The one-time code: the line that is nothing but digits.
    pub fn code(&self) -> String {
        self.data
            .lines()
            .map(str::trim)
            .find(|l| l.len() >= 4 && l.len() <= 10 && l.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in mail:\n{}", self.data))
            .to_string()
    }

    pub fn subject(&self) -> String {
        self.data
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("")
            .to_string()
    }
}

#[derive(Clone)]
struct Collect {
    inbox: Arc<Mutex<Vec<Mail>>>,
    to: Vec<String>,
    buf: Vec<u8>,
}

impl Handler for Collect {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.buf.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let data = String::from_utf8_lossy(&self.buf).replace("=\r\n", "");
        self.inbox.lock().unwrap().push(Mail {
            to: self.to.clone(),
            data,
        });
        response::OK
    }
}

pub struct Smtp {
    pub addr: SocketAddr,
    pub cert_path: PathBuf,
    inbox: Arc<Mutex<Vec<Mail>>>,
    _dir: tempfile::TempDir,
}

impl Smtp {
    /// Starts the server on 127.0.0.1:0 with a self-signed certificate for STARTTLS.
    pub fn start() -> Smtp {
        authgate::tls::install_provider();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("smtp-cert.pem");
        let key_path = dir.path().join("smtp-key.pem");
        authgate::tls::ensure_dev_certificate(&cert_path, &key_path).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let handler = Collect {
            inbox: inbox.clone(),
            to: Vec::new(),
            buf: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("localhost")
            .with_ssl(SslConfig::SelfSigned {
                cert_path: cert_path.display().to_string(),
                key_path: key_path.display().to_string(),
            })
            .unwrap()
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Smtp {
            addr,
            cert_path,
            inbox,
            _dir: dir,
        }
    }

    pub fn all(&self) -> Vec<Mail> {
        self.inbox.lock().unwrap().clone()
    }

    pub fn count_to(&self, to: &str) -> usize {
        self.all()
            .iter()
            .filter(|m| m.to.iter().any(|t| t.contains(to)))
            .count()
    }

    /// Waits for the `n`-th mail (1-based) to `to`.
    pub async fn nth_to(&self, to: &str, n: usize) -> Mail {
        for _ in 0..500 {
            let mails: Vec<Mail> = self
                .all()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t.contains(to)))
                .collect();
            if let Some(m) = mails.get(n - 1) {
                return m.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "mail #{n} to {to} did not arrive; inbox: {:?}",
            self.all().iter().map(|m| &m.to).collect::<Vec<_>>()
        );
    }

    /// The code in the newest mail to `to`, waiting for mail number `n`.
    pub async fn code(&self, to: &str, n: usize) -> String {
        self.nth_to(to, n).await.code()
    }
}
