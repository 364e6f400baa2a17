//! config.toml.example must stay a valid configuration that documents every key.

use authgate::config::{Config, MapSource};

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example")).unwrap()
}

#[test]
fn example_config_parses_with_its_settings_uncommented() {
    let text = example();
    Config::from_toml(&text, &MapSource::default()).expect("example parses");
    // Uncommenting every `# key = value` line must still parse: the commented keys are real.
    let uncommented: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start_matches("# ");
            let is_setting = t.starts_with("[[routes]]")
                || t.split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ') && !k.is_empty());
            if l.starts_with("# ") && is_setting {
                // Drop a trailing "(better: ...)" remark.
                t.split("   (").next().unwrap_or(t).to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    Config::from_toml(&uncommented, &MapSource::default())
        .unwrap_or_else(|e| panic!("uncommented example: {e}\n{uncommented}"));
}

/// Every key the configuration accepts appears in the example. The accepted keys are read
/// from serde's own "expected one of" list, so a new key cannot be forgotten here.
#[test]
fn example_documents_every_key() {
    let text = example();
    let sections = [
        "server",
        "proxy",
        "identity_headers",
        "log",
        "store",
        "accounts",
        "passwords",
        "otp",
        "mail",
        "security",
        "tokens",
    ];
    let mut missing = Vec::new();
    for section in sections {
        let probe = format!("[{section}]\n__probe__ = 1\n");
        let err = Config::from_toml(&probe, &MapSource::default())
            .unwrap_err()
            .to_string();
        for key in expected_keys(&err) {
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches("# ").trim_start();
                l.starts_with(&format!("{key} =")) || l.contains(&format!("{key}_file ="))
            });
            if !documented {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    let probe = "[[routes]]\nupstream = \"http://x\"\n__probe__ = 1\n";
    let err = Config::from_toml(probe, &MapSource::default())
        .unwrap_err()
        .to_string();
    for key in expected_keys(&err) {
        if !text
            .lines()
            .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} =")))
        {
            missing.push(format!("routes.{key}"));
        }
    }
    assert!(
        missing.is_empty(),
        "config.toml.example does not document: {missing:?}"
    );
}

/// The field names in serde's "expected one of `a`, `b`" / "expected `a` or `b`" message.
fn expected_keys(err: &str) -> Vec<String> {
    let list = err
        .split("expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    let list = list
        .split('\n')
        .next()
        .unwrap_or(list)
        .trim_start_matches("one of ");
    let keys: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!keys.is_empty(), "no keys found in: {err}");
    keys
}
