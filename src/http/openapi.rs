//! The contract as an OpenAPI 3.1 document (`openapi.json`, beside this file), served at
//! `{prefix}/openapi.json`. It is written for the default prefix, `/auth`; another prefix is
//! put in its paths when it is served.

/// The document as written.
pub const SOURCE: &str = include_str!("openapi.json");

/// The document for `prefix`: its paths under the prefix moved there.
pub fn document(prefix: &str) -> bytes::Bytes {
    if prefix == "/auth" {
        return bytes::Bytes::from_static(SOURCE.as_bytes());
    }
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(SOURCE) else {
        return bytes::Bytes::from_static(SOURCE.as_bytes());
    };
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        let moved: serde_json::Map<String, serde_json::Value> = std::mem::take(paths)
            .into_iter()
            .map(|(k, v)| match k.strip_prefix("/auth/") {
                Some(rest) => (format!("{prefix}/{rest}"), v),
                None => (k, v),
            })
            .collect();
        *paths = moved;
    }
    bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_json_and_moves_with_the_prefix() {
        let doc: serde_json::Value = serde_json::from_str(SOURCE).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        let moved: serde_json::Value = serde_json::from_slice(&document("/gate")).unwrap();
        let paths = moved["paths"].as_object().unwrap();
        assert!(paths.contains_key("/gate/register"));
        assert!(paths.contains_key("/healthz"));
        assert!(!paths.keys().any(|k| k.starts_with("/auth/")));
    }
}
