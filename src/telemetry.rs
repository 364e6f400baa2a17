//! Logging: tracing with text or JSON output, to stderr or a file. Request spans carry the
//! request id, client IP and user agent; security events go to the `audit` target (and are
//! counted, see `audit`); access lines to the `access` target.
//!
//! No line is written from a serving thread. Each line is formatted there (into a per-thread
//! buffer) and handed to one of two writer threads (`tracing-appender`), which write in
//! batches through one buffered [`Sink`]:
//! - access lines ([`crate::access_log`]) go through a bounded queue that drops what does not fit, counted in
//!   `authgate_log_dropped_total`: under a flood, the log gives way, never the requests;
//! - every other line (audit events, warnings) through a queue that waits when full: an
//!   audit event is never dropped.
//!
//! Each writer flushes when its queue runs dry, so a line reaches the file within
//! microseconds on a quiet gateway and within a buffer's worth of lines on a busy one.

use crate::config::{LogConfig, LogFormat};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Access lines a full queue held back (see [`Dropped`]).
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The metric `authgate_log_dropped_total`: access lines dropped since start because the
/// writer fell behind. Read from the writer's own count when scraped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dropped;

impl Dropped {
    pub fn lines() -> u64 {
        DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
    }
}

impl prometheus_client::encoding::EncodeMetric for Dropped {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &Dropped::lines(),
            None,
        )
    }
    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

/// What [`init`] started: keep it until the process ends. Dropping it writes out what the
/// queues still hold.
#[must_use = "dropping the guard stops the log writers"]
pub struct Logging {
    _writers: Vec<WorkerGuard>,
    sink: Arc<Sink>,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

impl Logging {
    /// The destination, for reopening its file (SIGHUP).
    pub fn sink(&self) -> Arc<Sink> {
        self.sink.clone()
    }
}

/// Where lines go: stderr, or a file that [`Sink::reopen`] opens anew (logrotate moves the
/// old one away and sends SIGHUP). Both writer threads write through its one lock, a whole
/// line at a time, so lines never interleave.
#[derive(Debug)]
pub struct Sink {
    path: Option<PathBuf>,
    out: Mutex<BufWriter<Out>>,
}

#[derive(Debug)]
enum Out {
    Stderr(io::Stderr),
    File(std::fs::File),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::Stderr(e) => e.write(buf),
            Out::File(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::Stderr(e) => e.flush(),
            Out::File(f) => f.flush(),
        }
    }
}

/// A batch is written with one `write(2)` when it fits.
const SINK_BUFFER: usize = 64 * 1024;

impl Sink {
    /// stderr, or the file at `path` (created, appended to, readable by its owner and group
    /// only: lines name accounts and addresses).
    pub fn open(path: Option<&Path>) -> io::Result<Sink> {
        let out = match path {
            None => Out::Stderr(io::stderr()),
            Some(p) => Out::File(open_append(p)?),
        };
        Ok(Sink {
            path: path.map(Path::to_path_buf),
            out: Mutex::new(BufWriter::with_capacity(SINK_BUFFER, out)),
        })
    }

    /// Writes out what is buffered, then opens the file again by its name. On failure the
    /// old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fresh = open_append(path)?;
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // What was written before the signal belongs in the old file.
        let _ = out.flush();
        *out = BufWriter::with_capacity(SINK_BUFFER, Out::File(fresh));
        Ok(())
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

/// Opens the log file again on every SIGHUP (logrotate's `postrotate`).
#[cfg(unix)]
pub async fn reopen_on_hangup(sink: Arc<Sink>) {
    use tokio::signal::unix::{SignalKind, signal};
    // Logging to stderr, SIGHUP keeps its usual meaning.
    if sink.path().is_none() {
        return;
    }
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be caught: the log file will not be reopened");
        return;
    };
    while hangups.recv().await.is_some() {
        match sink.reopen() {
            Ok(()) => tracing::info!(file = ?sink.path(), "log file reopened"),
            Err(e) => {
                tracing::error!(file = ?sink.path(), error = %e, "log file not reopened; still writing to the old one")
            }
        }
    }
}

fn open_append(path: &Path) -> io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o640);
    o.open(path)
}

/// A writer thread's handle on the sink.
struct SinkWriter(Arc<Sink>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = self.0.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.out.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// Lines the access queue holds before it drops: a line is at most ~1.5 KB (its path is cut
/// at 1 KiB), so ~50 MB at the very worst, ~8 MB of ordinary lines.
const ACCESS_QUEUE_LINES: usize = 32_768;

/// Installs the global subscriber and the access log. `RUST_LOG`, when set, wins over
/// `log.level`; the access log follows `log.access` alone.
pub fn init(cfg: &LogConfig) -> io::Result<Logging> {
    let sink = Arc::new(Sink::open(cfg.file.as_deref())?);
    let (events, events_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("authgate-log")
        .finish(SinkWriter(sink.clone()));
    let (access, access_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(ACCESS_QUEUE_LINES)
        .thread_name("authgate-access-log")
        .finish(SinkWriter(sink.clone()));
    let _ = DROPPED.set(access.error_counter());
    if cfg.access {
        crate::access_log::install(crate::access_log::AccessLog::new(
            access,
            cfg.format == LogFormat::Json,
        ));
    }

    // rustls warns once per handshake about clients that send an IP address as SNI (wrk,
    // health checkers): anyone could flood the log with it, so it is kept to errors.
    let level = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{},rustls=error", cfg.level)))
        .unwrap_or_else(|_| EnvFilter::new("info,rustls=error"));
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = cfg.file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The audit counter sees the audit target only. Unfiltered, it made every callsite
    // interesting: each request built its span and its access-log event even with the log at
    // "warn", for nothing (about a microsecond per proxied request).
    let audit_only = Targets::new().with_target("audit", LevelFilter::TRACE);
    let registry =
        tracing_subscriber::registry().with(crate::audit::CountLayer.with_filter(audit_only));
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = match cfg.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(events)
                    .with_filter(level),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    .with_ansi(ansi)
                    .with_writer(events)
                    .with_filter(level),
            )
            .try_init(),
    };
    Ok(Logging {
        _writers: vec![access_guard, events_guard],
        sink,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_moves_to_a_new_file_and_keeps_the_old_lines_in_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("authgate.log");
        let sink = Arc::new(Sink::open(Some(&live)).unwrap());
        let mut w = SinkWriter(sink.clone());
        w.write_all(b"before\n").unwrap();
        // logrotate: rename, then signal.
        let rotated = dir.path().join("authgate.log.1");
        std::fs::rename(&live, &rotated).unwrap();
        w.write_all(b"still old\n").unwrap();
        sink.reopen().unwrap();
        w.write_all(b"after\n").unwrap();
        w.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "before\nstill old\n"
        );
        assert_eq!(std::fs::read_to_string(&live).unwrap(), "after\n");
    }

    #[test]
    fn a_reopen_that_fails_keeps_the_open_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logs");
        std::fs::create_dir(&sub).unwrap();
        let live = sub.join("authgate.log");
        let sink = Arc::new(Sink::open(Some(&live)).unwrap());
        let mut w = SinkWriter(sink.clone());
        let moved = dir.path().join("moved");
        std::fs::rename(&sub, &moved).unwrap();
        assert!(sink.reopen().is_err(), "the directory is gone");
        w.write_all(b"kept\n").unwrap();
        w.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(moved.join("authgate.log")).unwrap(),
            "kept\n"
        );
    }
}
