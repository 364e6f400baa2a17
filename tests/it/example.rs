//! config.toml.example must stay a valid configuration that documents every key.

#[test]
fn example_config_parses_and_documents_every_key() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example"))
        .unwrap();
    authgate::Config::from_toml(&text, &authgate::config::MapSource::default())
        .expect("example parses");
    // Uncommenting every `# key = value` line must still parse: the commented keys are real.
    let uncommented: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start_matches("# ");
            let is_setting = t.starts_with("[[routes]]")
                || t.split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ') && !k.is_empty());
            if l.starts_with("# ") && is_setting {
                t.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    authgate::Config::from_toml(&uncommented, &authgate::config::MapSource::default())
        .unwrap_or_else(|e| panic!("uncommented example: {e}\n{uncommented}"));
}
