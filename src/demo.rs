//! The bundled demo upstream for the first run (no configuration file): a tiny HTTP server on
//! 127.0.0.1 that greets the signed-in user and shows the identity headers it received, so a
//! newcomer sees what an application behind authgate gets.

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(req: &Request<Incoming>, prefix: &str) -> String {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(escape)
    };
    let rows: String = req
        .headers()
        .iter()
        .filter(|(k, _)| {
            k.as_str().starts_with("x-auth-")
                || k.as_str().starts_with("x-forwarded-")
                || k.as_str() == "x-request-id"
        })
        .map(|(k, v)| {
            format!(
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k.as_str()),
                escape(v.to_str().unwrap_or("?"))
            )
        })
        .collect();
    let greeting = match h("x-auth-user-name").or_else(|| h("x-auth-user-email")) {
        Some(name) => format!(
            "<h1>Hello, {name}</h1><p>You reached this demo application through authgate, \
             which signed you in and told it who you are in the headers below.</p>\
             <p><a href=\"{p}/ui/devices\">Your devices</a> (sign out this one, another, \
             or all of them)</p>",
            p = escape(prefix)
        ),
        None => format!(
            "<h1>Not signed in</h1><p>authgate let this request through without an identity. \
             <a href=\"{p}/login?rd=/\">Sign in</a> and the identity headers below appear.</p>",
            p = escape(prefix)
        ),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>authgate demo</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:50rem;margin:2rem auto;padding:0 1rem\">\
         {greeting}<h2>Headers from authgate</h2><table>{rows}</table></body></html>"
    )
}

/// Starts the demo upstream on 127.0.0.1 (a free port) and returns its address.
pub async fn start(auth_prefix: String) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let prefix = auth_prefix.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let body = page(&req, &prefix);
                    async move {
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/html; charset=utf-8"),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
