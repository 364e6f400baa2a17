//! A throwaway PostgreSQL cluster for the tests: initdb in a temp dir, the server on a free
//! port on 127.0.0.1, a database per use. Found on the PATH or under Debian's
//! /usr/lib/postgresql/<version>/bin; absent, the tests that need it skip loudly (or fail with
//! AUTHGATE_TEST_REQUIRE_ALL=1). As root (CI), the server runs as the `postgres` user, since
//! initdb refuses root.

use crate::external::{find, free_port};
use authgate::store::PgOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The directory holding pg_ctl and initdb.
fn bin_dir() -> Option<PathBuf> {
    if let Some(p) = find("pg_ctl") {
        return p.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").is_file() && b.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl PgCluster {
    /// A running cluster, or `None` after saying loudly that `test` is skipped.
    pub fn start(test: &str) -> Option<PgCluster> {
        Self::start_with(test, false)
    }

    /// With `tls`, the server also speaks TLS with a self-signed certificate for 127.0.0.1
    /// and localhost, kept at [`PgCluster::cert`].
    pub fn start_with(test: &str, tls: bool) -> Option<PgCluster> {
        let Some(bin) = bin_dir() else {
            crate::external::require("pg_ctl", test);
            return None;
        };
        let as_postgres = output(Command::new("id").arg("-u")) == "0";
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            let uid: u32 = output(Command::new("id").args(["-u", "postgres"]))
                .parse()
                .expect("a postgres user (Debian's postgresql package makes it)");
            let gid: u32 = output(Command::new("id").args(["-g", "postgres"]))
                .parse()
                .unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let mut c = PgCluster {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        c.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "authgate",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut ssl = String::new();
        if tls {
            let cert = c.cert();
            let key = c.dir.path().join("server.key");
            authgate::tls::ensure_dev_certificate(&cert, &key).unwrap();
            if as_postgres {
                c.run_as_root_chown(&[&cert, &key]);
            }
            ssl = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            );
        }
        // The port is chosen before the server binds it: retry on a collision.
        for _ in 0..5 {
            let port = free_port();
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=200{ssl}",
                c.dir.path().display()
            );
            let log = c.dir.path().join("log");
            let ok = c.try_run(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            if ok {
                c.port = port;
                return Some(c);
            }
            eprintln!(
                "postgres did not start on {port}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("postgres did not start");
    }

    /// The server certificate of a TLS cluster.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    fn run_as_root_chown(&self, files: &[&Path]) {
        let uid: u32 = output(Command::new("id").args(["-u", "postgres"]))
            .parse()
            .unwrap();
        let gid: u32 = output(Command::new("id").args(["-g", "postgres"]))
            .parse()
            .unwrap();
        for f in files {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).unwrap();
        }
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> bool {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.status.success()
    }

    fn run(&self, program: &str, args: &[&str]) {
        assert!(self.try_run(program, args), "{program} failed");
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://authgate@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// A new, empty database.
    pub async fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        name
    }

    /// Options for a new, empty, migrated database.
    pub async fn migrated(&self) -> PgOptions {
        let opts = PgOptions {
            url: self.url(&self.database().await),
            tls_ca: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(10),
        };
        authgate::store::Store::migrate(&opts).await.unwrap();
        opts
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap_or(""), "-m", "immediate", "stop"])
            .output();
    }
}
