//! The contract in the repository: the OpenAPI document served at `/auth/openapi.json` lists
//! exactly the operations the router answers (its table), and each of them is answered.

use crate::harness::*;
use authgate::http::operations::{ANY, AT_ROOT, UNDER_PREFIX};
use std::collections::BTreeSet;

const METHODS: [&str; 7] = ["get", "head", "post", "put", "patch", "delete", "options"];

#[tokio::test]
async fn the_openapi_document_names_every_operation_and_each_is_answered() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        "[server]\nmetrics_on_main_listener = true\n[[routes]]\npath_prefix = \"/\"\nupstream = \"{}\"\n",
        up.url()
    ))
    .await;
    let r = gw
        .client
        .get(gw.url("/auth/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));

    // The document's operations, and the router's table, as (METHOD, path) sets.
    let mut documented = BTreeSet::new();
    let mut any_method_paths = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                assert!(
                    op["operationId"].is_string() && op["responses"].is_object(),
                    "{m} {path}: an operation needs an operationId and its responses"
                );
                documented.insert((m.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    let mut table = BTreeSet::new();
    for (m, path) in UNDER_PREFIX {
        let path = format!("/auth{path}");
        match *m == ANY {
            true => {
                any_method_paths.insert(path);
            }
            false => {
                table.insert((m.to_string(), path));
            }
        }
    }
    for (m, path) in AT_ROOT {
        table.insert((m.to_string(), path.to_string()));
    }
    // The forward-auth doors take any method: the document lists at least GET and HEAD.
    for path in &any_method_paths {
        for m in ["GET", "HEAD"] {
            assert!(
                documented.remove(&(m.to_string(), path.clone())),
                "{m} {path} is not documented"
            );
        }
        documented.retain(|(_, p)| p != path);
    }
    let undocumented: Vec<_> = table.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&table).collect();
    assert!(
        undocumented.is_empty(),
        "answered but not documented: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not answered: {unrouted:?}"
    );

    // Each operation is answered by a handler: never the router's 404 or 405, whatever
    // (anonymous, empty) request it gets.
    let ops = table.iter().cloned().chain(
        any_method_paths
            .iter()
            .map(|p| ("GET".to_string(), p.clone())),
    );
    for (m, path) in ops {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let r = gw
            .client
            .request(m.parse().unwrap(), gw.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(
            status != 404 && status != 405,
            "{m} {concrete}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
    // And what is not in the table is not answered.
    for (m, path) in [
        ("GET", "/auth/nothing"),
        ("GET", "/auth/register"),
        ("PUT", "/auth/me"),
    ] {
        let r = gw
            .client
            .request(m.parse().unwrap(), gw.url(path))
            .send()
            .await
            .unwrap();
        assert!(matches!(r.status().as_u16(), 404 | 405), "{m} {path}");
        if r.status() == 405 {
            assert!(
                r.headers().contains_key("allow"),
                "{m} {path}: a 405 says what is allowed"
            );
        }
    }
    gw.stop().await;
}
