//! Finding outside programs (nginx, Caddy) for the tests that drive them. Absent programs
//! skip the test loudly, or fail it when AUTHGATE_TEST_REQUIRE_ALL=1 (CI installs them).

use std::path::PathBuf;

pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/usr/local/sbin", "/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The program, or `None` after saying loudly that the test is skipped.
pub fn require(program: &str, test: &str) -> Option<PathBuf> {
    if let Some(p) = find(program) {
        return Some(p);
    }
    if std::env::var("AUTHGATE_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test}: `{program}` not found and AUTHGATE_TEST_REQUIRE_ALL=1");
    }
    let package = match program {
        "pg_ctl" => "postgresql",
        "chromedriver" => "chromium-driver",
        other => other,
    };
    eprintln!(
        "\n*** SKIPPED {test}: `{program}` is not installed (apt-get install {package}); CI runs it ***\n"
    );
    None
}

/// A free port on 127.0.0.1 (for programs that cannot bind port 0 and report it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub async fn wait_port(port: u16, what: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not start listening on {port}");
}

/// A Python interpreter that can import `module` (a PyPI package CI installs), or `None`
/// after saying loudly that the test is skipped.
pub fn require_python_module(module: &str, test: &str) -> Option<PathBuf> {
    let python = find("python3")?;
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(python);
    }
    if std::env::var("AUTHGATE_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test}: Python module `{module}` not found and AUTHGATE_TEST_REQUIRE_ALL=1");
    }
    eprintln!(
        "\n*** SKIPPED {test}: Python module `{module}` is not installed (pip install {module}); CI runs it ***\n"
    );
    None
}
