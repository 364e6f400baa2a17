//! The access log: one line per request, formatted on the serving thread into a per-thread
//! buffer and handed to the access writer thread (`tracing-appender`'s non-blocking writer,
//! lossy: see [`crate::telemetry`]). Lines keep the shape the `tracing` text and JSON
//! formatters gave them, but skip their machinery: an event built and dispatched to every
//! layer, its fields visited through `fmt::Debug`, a calendar date formatted per line. That
//! cost about 3 µs of CPU per proxied request against nginx's 0.7 µs for its own log.
//!
//! Never headers (Authorization, Cookie), never the query string, which may carry a token or
//! a code.

use crate::clock::SystemClock;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;
use tracing_appender::non_blocking::NonBlocking;

/// The access log, when it is on (set once by [`crate::telemetry::init`]; tests that start
/// the gateway in-process have none).
static ACCESS: OnceLock<AccessLog> = OnceLock::new();

pub fn get() -> Option<&'static AccessLog> {
    ACCESS.get()
}

pub(crate) fn install(log: AccessLog) {
    let _ = ACCESS.set(log);
}

/// What one line says.
#[derive(Debug)]
pub struct Line<'a> {
    pub id: &'a http::HeaderValue,
    pub client: IpAddr,
    pub ua: Option<&'a str>,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub micros: u64,
}

/// The most of a path a line keeps, in bytes (cut at the character boundary at or below).
const MAX_PATH: usize = 1024;

#[derive(Debug)]
pub struct AccessLog {
    writer: NonBlocking,
    json: bool,
}

/// A serving thread's line buffer, and the date and time to the second it last wrote
/// (formatted once a second, as nginx does).
#[derive(Default)]
struct Buffers {
    line: String,
    second: u64,
    stamp: String,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

impl AccessLog {
    pub(crate) fn new(writer: NonBlocking, json: bool) -> Self {
        AccessLog { writer, json }
    }

    /// Formats and hands over one line; a full queue drops it (and counts it).
    pub fn write(&self, l: &Line<'_>) {
        // A path may be as long as the header limit allows; the line keeps its start, so
        // a flood of long paths cannot make the queue hold megabytes per line.
        let path = cut(l.path);
        BUFFERS.with_borrow_mut(|b| {
            let now = SystemClock.since_epoch();
            if b.second != now.as_secs() || b.stamp.is_empty() {
                b.second = now.as_secs();
                b.stamp.clear();
                let t = time::OffsetDateTime::from_unix_timestamp(
                    i64::try_from(now.as_secs()).unwrap_or(0),
                )
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                let _ = write!(
                    b.stamp,
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                );
            }
            let Buffers { line, stamp, .. } = b;
            line.clear();
            let micros = now.subsec_micros();
            let id = l.id.to_str().unwrap_or("");
            if self.json {
                // serde_json escapes the strings; the rest are numbers and fixed words.
                let s = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into());
                let _ = write!(
                    line,
                    "{{\"timestamp\":\"{stamp}.{micros:06}Z\",\"level\":\"INFO\",\"message\":\"request\",\"method\":{},\"path\":{},\"status\":{},\"route\":{},\"micros\":{},\"target\":\"access\",\"span\":{{\"id\":{},\"client\":\"{}\"",
                    s(l.method.as_str()),
                    s(path),
                    l.status,
                    s(l.route),
                    l.micros,
                    s(id),
                    l.client
                );
                if let Some(ua) = l.ua {
                    let _ = write!(line, ",\"ua\":{}", s(ua));
                }
                line.push_str(",\"name\":\"request\"}}\n");
            } else {
                let _ = write!(
                    line,
                    "{stamp}.{micros:06}Z  INFO request{{id={id:?} client={}",
                    l.client
                );
                if let Some(ua) = l.ua {
                    let _ = write!(line, " ua={ua:?}");
                }
                let _ = writeln!(
                    line,
                    "}}: access: request method={} path={:?} status={} route={:?} micros={}",
                    l.method, path, l.status, l.route, l.micros
                );
            }
            // One write, one queued line: the writer counts what it drops by line.
            let _ = self.writer.clone().write_all(line.as_bytes());
        });
    }
}

/// The first [`MAX_PATH`] bytes of `path` at most, ending on a character boundary.
fn cut(path: &str) -> &str {
    let end = (0..=MAX_PATH.min(path.len()))
        .rev()
        .find(|&i| path.is_char_boundary(i))
        .unwrap_or(0);
    path.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        assert_eq!(cut("/short"), "/short");
        let ascii = "a".repeat(MAX_PATH + 10);
        assert_eq!(cut(&ascii).len(), MAX_PATH);
        // 'é' is two bytes: MAX_PATH falls inside one when the path starts with '/'.
        let wide = format!("/{}", "é".repeat(MAX_PATH));
        let c = cut(&wide);
        assert_eq!(c.len(), MAX_PATH - 1);
        assert!(wide.starts_with(c));
    }
}
