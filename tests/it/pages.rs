//! The hosted pages without JavaScript, as a browser with scripts off uses them: GET a page,
//! post its form (urlencoded, CSRF token from the page, cookies in a jar), follow the 303.
//! A real gateway over TLS, a real SMTP receiver and a real upstream.

use crate::external::free_port;
use crate::harness::*;
use crate::mail::Smtp;
use authgate::clock::ManualClock;
use reqwest::StatusCode;
use std::time::Duration;

pub struct Site {
    pub gw: Gateway,
    pub smtp: Smtp,
    pub _upstream: Upstream,
    pub port: u16,
}

/// A gateway on a chosen port (named in public_url), `/app` protected in front of a real
/// upstream, mail to a real SMTP server.
pub async fn site(clock: Option<&ManualClock>, extra: &str) -> Site {
    let smtp = Smtp::start();
    let upstream = Upstream::start().await;
    let mut dir = tempfile::tempdir().unwrap();
    // The port is chosen before the gateway binds it (public_url names it): another test may
    // take it in between, so try a few.
    for _ in 0..5 {
        let port = free_port();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://localhost:{port}\"\n\
             allowed_redirect_hosts = [\"app.test\", \".localhost\"]\n{extra}\n\
             [[routes]]\npath_prefix = \"/app\"\nupstream = \"{u}\"\naccess = \"authenticated\"\n\
             [[routes]]\npath_prefix = \"/vault\"\nupstream = \"{u}\"\nmfa = true\n",
            u = upstream.url()
        );
        match Gateway::try_start_in(dir, &toml, Some(&smtp), clock).await {
            Ok(gw) => {
                return Site {
                    gw,
                    smtp,
                    _upstream: upstream,
                    port,
                };
            }
            Err((e, d)) => {
                eprintln!("port {port}: {e}; trying another");
                dir = d;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("no free port for the gateway");
}

/// A browser without JavaScript: a cookie jar, no automatic redirects (each hop is checked).
pub struct Web {
    jar: std::sync::Arc<reqwest::cookie::Jar>,
    pub client: reqwest::Client,
    pub base: String,
    /// A CSRF token to send instead of the current one (to test a forged form).
    forced_csrf: Option<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

/// The value of `<input name="NAME" value="...">` in a page, HTML entities undone.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let rest = html.get(at..)?;
    let v = rest.split("value=\"").nth(1)?.split('"').next()?;
    Some(
        v.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

impl Web {
    pub fn new(site: &Site) -> Web {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", site.port).parse().unwrap();
        let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
        let client = site
            .gw
            .client_builder()
            .cookie_provider(jar.clone())
            .resolve("localhost", addr)
            .resolve("app.localhost", addr)
            // app.localhost is not on the development certificate (the cookie_domain test).
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        Web {
            jar,
            client,
            base: format!("https://localhost:{}", site.port),
            forced_csrf: None,
        }
    }

    /// A cookie the browser would send to `path`.
    pub fn cookie(&self, path: &str, name: &str) -> Option<String> {
        use reqwest::cookie::CookieStore;
        let header = self.jar.cookies(&self.url(path).parse().unwrap())?;
        header.to_str().unwrap().split("; ").find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn page(&mut self, r: reqwest::Response) -> Page {
        let status = r.status();
        let headers = r.headers().clone();
        let location = headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        let html = r.text().await.unwrap();
        Page {
            status,
            location,
            headers,
            html,
        }
    }

    /// A navigation (what a browser sends when a link is followed).
    pub async fn get(&mut self, path: &str) -> Page {
        let r = self
            .client
            .get(self.url(path))
            .header("accept", "text/html,application/xhtml+xml")
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .unwrap();
        self.page(r).await
    }

    /// Posts a form from one of our pages, with the CSRF token that page carried.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        // The token the page would carry: the current CSRF cookie (it changes at sign-in).
        let token = self
            .forced_csrf
            .clone()
            .or_else(|| self.cookie("/auth/ui/login", "__Host-authgate-csrf"))
            .unwrap_or_default();
        let mut form: Vec<(&str, &str)> = vec![("csrf", &token)];
        form.extend_from_slice(fields);
        let body = serde_urlencoded(&form);
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin")
            .body(body)
            .send()
            .await
            .unwrap();
        self.page(r).await
    }

    /// Follows redirects like a browser until a page answers.
    pub async fn follow(&mut self, mut p: Page) -> Page {
        for _ in 0..5 {
            match &p.location {
                Some(to) if p.status.is_redirection() => {
                    let to = to.clone();
                    p = self.get(&to).await;
                }
                _ => return p,
            }
        }
        panic!("redirect loop");
    }
}

fn serde_urlencoded(fields: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

const PW: &str = "correct horse battery staple";

/// Sign up from a protected page, verify by the mailed code, land back on that page.
pub async fn sign_up(site: &Site, web: &mut Web, email: &str) {
    let p = web.get("/app/page?x=1").await;
    assert_eq!(p.status, 302);
    let login = p.location.unwrap();
    assert_eq!(
        login,
        format!(
            "https://localhost:{}/auth/login?rd=%2Fapp%2Fpage%3Fx%3D1",
            site.port
        )
    );
    let p = web.get(&login).await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("<h1>Sign in</h1>"), "{}", p.html);
    let signup = p
        .html
        .split("href=\"")
        .find(|s| s.starts_with("/auth/ui/signup"))
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let p = web.get(&signup).await;
    assert_eq!(input_value(&p.html, "rd").as_deref(), Some("/app/page?x=1"));
    let p = web
        .post(
            "/auth/ui/signup",
            &[
                ("email", email),
                ("password", PW),
                ("username", ""),
                ("full_name", "Ada Lovelace"),
                ("rd", "/app/page?x=1"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.html);
    assert!(p.html.contains("Verify your email"), "{}", p.html);
    let code = site.smtp.nth_to(email, 1).await.code();
    let p = web
        .post(
            "/auth/ui/verify",
            &[("email", email), ("code", &code), ("rd", "/app/page?x=1")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location.as_deref(), Some("/app/page?x=1"));
    let p = web.get("/app/page?x=1").await;
    assert_eq!(p.status, 200);
    let echo: serde_json::Value = serde_json::from_str(&p.html).unwrap();
    assert_eq!(echo["headers"]["x-auth-user-email"][0], email);
}

#[tokio::test]
async fn sign_up_verify_and_land_on_the_page_asked_for() {
    let site = site(None, "").await;
    let mut web = Web::new(&site);
    sign_up(&site, &mut web, "ada@example.com").await;

    // Every page carries the strict policy and no script but our own passkey script (no
    // inline code).
    let p = web.get("/auth/ui/devices").await;
    assert_eq!(p.status, 200);
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe-inline"));
    assert_eq!(
        p.html.matches("<script").count(),
        p.html
            .matches(r#"<script src="/auth/ui/passkeys.js" defer></script>"#)
            .count()
    );
    assert_eq!(p.html.matches("<script").count(), 1, "{}", p.html);
    assert!(p.html.contains("this device"), "{}", p.html);

    // The login page, when already signed in, sends the browser straight back.
    let p = web.get("/auth/login?rd=%2Fapp%2Fother").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/app/other"));

    // Sign out: the protected page sends the browser to the login page again.
    let p = web.post("/auth/ui/logout", &[]).await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/auth/ui/signed-out"));
    let p = web.follow(p).await;
    assert!(p.html.contains("You are signed out"));
    assert_eq!(web.get("/app/page").await.status, 302);
    site.gw.stop().await;
}

#[tokio::test]
async fn sign_in_by_code_and_by_password_with_api_errors() {
    let site = site(None, "").await;
    let mut web = Web::new(&site);
    sign_up(&site, &mut web, "bob@example.com").await;
    web.post("/auth/ui/logout", &[]).await;

    // A wrong password: the form again, with the API's message, announced.
    web.get("/auth/login").await;
    let p = web
        .post(
            "/auth/ui/login",
            &[
                ("login", "bob@example.com"),
                ("password", "not the password at all"),
            ],
        )
        .await;
    assert_eq!(p.status, 401);
    assert!(p.html.contains("role=\"alert\""), "{}", p.html);
    let (_, api) = site
        .gw
        .post(
            "/auth/login",
            serde_json::json!({"login": "bob@example.com", "password": "not the password at all"}),
        )
        .await;
    let api_message = api["message"].as_str().unwrap();
    assert!(p.html.contains(api_message), "{api_message} in {}", p.html);
    // The typed login stays, the password does not.
    assert_eq!(
        input_value(&p.html, "login").as_deref(),
        Some("bob@example.com")
    );
    assert!(!p.html.contains("not the password at all"));

    // The same answer for an unknown account (no enumeration through the page).
    let q = web
        .post(
            "/auth/ui/login",
            &[
                ("login", "nobody@example.com"),
                ("password", "not the password at all"),
            ],
        )
        .await;
    assert_eq!(q.status, 401);
    assert!(q.html.contains(api_message));

    // By password.
    let p = web
        .post(
            "/auth/ui/login",
            &[
                ("login", "bob@example.com"),
                ("password", PW),
                ("rd", "/app/x"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location.as_deref(), Some("/app/x"));
    assert_eq!(web.get("/app/x").await.status, 200);
    web.post("/auth/ui/logout", &[]).await;

    // By code: email, then the code from the mail.
    web.get("/auth/ui/code").await;
    let p = web
        .post(
            "/auth/ui/code",
            &[("email", "bob@example.com"), ("rd", "/app/y")],
        )
        .await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("Enter your code"), "{}", p.html);
    assert!(p.html.contains("a code has been sent"));
    let code = site.smtp.nth_to("bob@example.com", 2).await.code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let p = web
        .post(
            "/auth/ui/code/verify",
            &[
                ("email", "bob@example.com"),
                ("code", wrong),
                ("rd", "/app/y"),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(p.html.contains("aria-invalid") || p.html.contains("role=\"alert\""));
    let p = web
        .post(
            "/auth/ui/code/verify",
            &[
                ("email", "bob@example.com"),
                ("code", &code),
                ("rd", "/app/y"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location.as_deref(), Some("/app/y"));
    assert_eq!(web.get("/app/y").await.status, 200);

    // An unknown address gets the same "sent" page as a known one.
    web.post("/auth/ui/logout", &[]).await;
    web.get("/auth/ui/code").await;
    let p = web
        .post("/auth/ui/code", &[("email", "nobody@example.com")])
        .await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("a code has been sent"));
    site.gw.stop().await;
}

#[tokio::test]
async fn forgotten_password_and_signing_out_another_device() {
    let site = site(None, "").await;
    let mut phone = Web::new(&site);
    sign_up(&site, &mut phone, "cy@example.com").await;
    let mut laptop = Web::new(&site);
    laptop.get("/auth/login").await;
    let p = laptop
        .post(
            "/auth/ui/login",
            &[("login", "cy@example.com"), ("password", PW)],
        )
        .await;
    assert_eq!(p.status, 303);

    // The laptop signs the phone out from its devices page.
    let p = laptop.get("/auth/ui/devices").await;
    assert_eq!(p.html.matches("<li>").count(), 2, "{}", p.html);
    let phone_session = p
        .html
        .split("<li>")
        .filter(|li| !li.contains("this device"))
        .find_map(|li| input_value(li, "session"))
        .unwrap();
    let p = laptop
        .post("/auth/ui/devices/revoke", &[("session", &phone_session)])
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/auth/ui/devices"));
    let p = laptop.get("/auth/ui/devices").await;
    assert_eq!(p.html.matches("<li>").count(), 1);
    assert_eq!(phone.get("/app/page").await.status, 302, "phone signed out");
    assert_eq!(laptop.get("/app/page").await.status, 200, "laptop still in");

    // Forgot password, on a third browser: code by mail, new password, every session ends.
    let mut other = Web::new(&site);
    other.get("/auth/ui/forgot").await;
    let p = other
        .post("/auth/ui/forgot", &[("email", "cy@example.com")])
        .await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("Choose a new password"), "{}", p.html);
    let code = site.smtp.nth_to("cy@example.com", 2).await.code();
    let new_pw = "a brand new passphrase for cy";
    let p = other
        .post(
            "/auth/ui/reset",
            &[
                ("email", "cy@example.com"),
                ("code", &code),
                ("new_password", new_pw),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    let p = other.follow(p).await;
    assert!(
        p.html.contains("Your password has been changed"),
        "{}",
        p.html
    );
    assert_eq!(
        laptop.get("/app/page").await.status,
        302,
        "reset ends sessions"
    );
    let p = other
        .post(
            "/auth/ui/login",
            &[("login", "cy@example.com"), ("password", new_pw)],
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/"));
    site.gw.stop().await;
}

/// Email change from the devices page, without script: the password, the code from the new
/// address, then this browser carries on signed in as the new address and the other is out.
#[tokio::test]
async fn changing_the_email_address_from_the_pages() {
    let site = site(None, "").await;
    let mut phone = Web::new(&site);
    sign_up(&site, &mut phone, "di@example.com").await;
    let mut laptop = Web::new(&site);
    laptop.get("/auth/login").await;
    let p = laptop
        .post(
            "/auth/ui/login",
            &[("login", "di@example.com"), ("password", PW)],
        )
        .await;
    assert_eq!(p.status, 303);

    let p = laptop.get("/auth/ui/devices").await;
    assert!(p.html.contains("/auth/ui/email"), "{}", p.html);
    let p = laptop.get("/auth/ui/email").await;
    assert_eq!(p.status, 200);
    assert!(
        p.html.contains("di@example.com") && p.html.contains("current_password"),
        "{}",
        p.html
    );
    let p = laptop
        .post(
            "/auth/ui/email",
            &[
                ("email", "dee@example.com"),
                ("current_password", "wrong one"),
            ],
        )
        .await;
    assert_eq!(p.status, 401, "{}", p.html);
    assert!(p.html.contains("Change your email address"), "{}", p.html);
    assert_eq!(
        input_value(&p.html, "email").as_deref(),
        Some("dee@example.com")
    );
    let p = laptop
        .post(
            "/auth/ui/email",
            &[("email", "dee@example.com"), ("current_password", PW)],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.html);
    assert!(p.html.contains("Confirm your new address"), "{}", p.html);
    let code = site.smtp.nth_to("dee@example.com", 1).await.code();
    let p = laptop
        .post(
            "/auth/ui/email/verify",
            &[("email", "dee@example.com"), ("code", &code)],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location.as_deref(), Some("/auth/ui/devices"));
    let p = laptop.get("/auth/ui/devices").await;
    assert!(p.html.contains("dee@example.com"), "{}", p.html);
    let p = laptop.get("/app/page").await;
    assert_eq!(p.status, 200);
    let echo: serde_json::Value = serde_json::from_str(&p.html).unwrap();
    assert_eq!(echo["headers"]["x-auth-user-email"][0], "dee@example.com");
    assert_eq!(
        phone.get("/app/page").await.status,
        302,
        "the other browser is out"
    );
    // Signed out, the page sends to the login page and back.
    let mut stranger = Web::new(&site);
    let p = stranger.get("/auth/ui/email").await;
    assert_eq!(p.status, 303);
    assert!(p.location.unwrap().contains("/auth/login?rd="));
    site.gw.stop().await;
}

#[tokio::test]
async fn open_redirects_and_forged_forms_are_refused() {
    let site = site(None, "").await;
    let mut web = Web::new(&site);
    sign_up(&site, &mut web, "dee@example.com").await;
    web.post("/auth/ui/logout", &[]).await;

    // A return URL to a foreign host is dropped from the page and ignored in the form.
    for evil in ["https://evil.test/x", "//evil.test/x", "/\\evil.test"] {
        let q: String = url::form_urlencoded::byte_serialize(evil.as_bytes()).collect();
        let p = web.get(&format!("/auth/login?rd={q}")).await;
        assert_eq!(p.status, 200);
        assert_eq!(input_value(&p.html, "rd"), None, "{evil}");
        let p = web
            .post(
                "/auth/ui/login",
                &[("login", "dee@example.com"), ("password", PW), ("rd", evil)],
            )
            .await;
        assert_eq!(p.status, 303);
        assert_eq!(p.location.as_deref(), Some("/"), "{evil}");
        web.post("/auth/ui/logout", &[]).await;
    }
    // Control characters a browser would strip (turning "/\t/evil.test" into
    // "//evil.test"), and backslashes, make a return URL unacceptable.
    web.get("/auth/login").await;
    let p = web
        .post(
            "/auth/ui/login",
            &[("login", "dee@example.com"), ("password", PW)],
        )
        .await;
    assert_eq!(p.status, 303);
    for evil in [
        "/%09/evil.test",
        "/%0a/evil.test",
        "/%09%5cevil.test",
        "/%5c%5cevil.test",
    ] {
        let p = web.get(&format!("/auth/login?rd={evil}")).await;
        assert_eq!(p.status, 303, "{evil}");
        assert_eq!(p.location.as_deref(), Some("/"), "{evil}");
    }
    // A configured host is allowed, but this gateway's cookie does not reach it (no
    // cookie_domain): rather than bounce the browser back and forth, a page says so.
    let p = web
        .get("/auth/login?rd=https%3A%2F%2Fapp.test%2Fhome")
        .await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("You are signed in"), "{}", p.html);
    assert!(p.html.contains("cookie_domain"), "{}", p.html);
    web.post("/auth/ui/logout", &[]).await;

    // A form without the CSRF token, with a wrong one, or posted cross-site: refused.
    let fresh = Web::new(&site);
    let r = fresh
        .client
        .post(fresh.url("/auth/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("login=dee%40example.com&password=correct+horse+battery+staple")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("did not come from this site")
    );
    let mut web2 = Web::new(&site);
    web2.get("/auth/login").await;
    web2.forced_csrf = Some("x".repeat(43));
    let p = web2
        .post(
            "/auth/ui/login",
            &[("login", "dee@example.com"), ("password", PW)],
        )
        .await;
    assert_eq!(p.status, 403);
    let mut web3 = Web::new(&site);
    web3.get("/auth/login").await;
    let body = serde_urlencoded(&[
        ("csrf", &web3.cookie("/", "__Host-authgate-csrf").unwrap()),
        ("login", "dee@example.com"),
        ("password", PW),
    ]);
    let r = web3
        .client
        .post(web3.url("/auth/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Bad bodies get a clear 4xx page, never a 500.
    let r = web3
        .client
        .post(web3.url("/auth/ui/login"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = web3
        .client
        .post(web3.url("/auth/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    site.gw.stop().await;
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_on_navigation() {
    let clock = ManualClock::starting_now();
    let site = site(Some(&clock), "").await;
    let mut web = Web::new(&site);
    sign_up(&site, &mut web, "eve@example.com").await;
    // Past the access token's 15 minutes; the refresh token lives on.
    clock.advance(Duration::from_secs(16 * 60));
    let p = web.get("/app/deep?q=2").await;
    assert_eq!(p.status, 302);
    let login = p.location.unwrap();
    // The login page refreshes the session and sends the browser straight back.
    let p = web.get(&login).await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location.as_deref(), Some("/app/deep?q=2"));
    let p = web.get("/app/deep?q=2").await;
    assert_eq!(p.status, 200);
    let echo: serde_json::Value = serde_json::from_str(&p.html).unwrap();
    assert_eq!(echo["headers"]["x-auth-user-email"][0], "eve@example.com");
    // The proxied application never sees the gateway's cookies.
    assert!(
        echo["headers"]["cookie"][0]
            .as_str()
            .is_none_or(|c| !c.contains("authgate")),
        "{echo}"
    );

    // The refresh cookie is for the gateway's own paths only.
    assert!(
        web.cookie("/app/deep", "__Secure-authgate-refresh")
            .is_none()
    );

    // An image or frame another site embeds does not refresh the session.
    clock.advance(Duration::from_secs(16 * 60));
    let r = web
        .client
        .get(web.url("/auth/login"))
        .header("sec-fetch-dest", "image")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the form, not a refresh");
    let p = web.get("/auth/login?rd=%2Fapp%2Fdeep").await;
    assert_eq!(p.status, 303, "a navigation does refresh");
    let refresh = web
        .cookie("/auth/login", "__Secure-authgate-refresh")
        .unwrap();

    // A second device, then "sign out everywhere" from a page left open past the access
    // token's life: both sessions end on the server, not only in this browser.
    let mut other = Web::new(&site);
    other.get("/auth/login").await;
    let p = other
        .post(
            "/auth/ui/login",
            &[("login", "eve@example.com"), ("password", PW)],
        )
        .await;
    assert_eq!(p.status, 303);
    let other_refresh = other
        .cookie("/auth/login", "__Secure-authgate-refresh")
        .unwrap();
    web.get("/auth/ui/devices").await;
    clock.advance(Duration::from_secs(16 * 60));
    let p = web.post("/auth/ui/logout", &[("all", "1")]).await;
    assert_eq!(p.location.as_deref(), Some("/auth/ui/signed-out"));
    let (status, _) = site
        .gw
        .post(
            "/auth/token/refresh",
            serde_json::json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = site
        .gw
        .post(
            "/auth/token/refresh",
            serde_json::json!({ "refresh_token": other_refresh }),
        )
        .await;
    assert_eq!(status, 401, "the other device was signed out too");
    let p = web.get("/auth/login").await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("<h1>Sign in</h1>"));
    site.gw.stop().await;
}

#[tokio::test]
async fn api_clients_still_get_401_not_the_login_page() {
    let site = site(None, "").await;
    let r = site
        .gw
        .client
        .get(site.gw.url("/app/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "UNAUTHENTICATED");
    // A fetch from a page (not a navigation) is an API call too.
    let r = site
        .gw
        .client
        .get(site.gw.url("/app/x"))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The stylesheet is served, cacheable.
    let r = site
        .gw
        .client
        .get(site.gw.url("/auth/ui/style.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    site.gw.stop().await;
}

#[tokio::test]
async fn a_cookie_domain_signs_in_every_app_under_it() {
    let site = site(None, "cookie_domain = \"localhost\"").await;
    let mut web = Web::new(&site);
    sign_up(&site, &mut web, "sso@example.com").await;
    web.post("/auth/ui/logout", &[]).await;

    // An app on another host under the domain sends the browser to the gateway's login page.
    let app = format!("https://app.localhost:{}/app/x", site.port);
    let p = web.get(&app).await;
    assert_eq!(p.status, 302);
    let login = p.location.unwrap();
    let back: String = url::form_urlencoded::byte_serialize(app.as_bytes()).collect();
    assert!(
        login.ends_with(&format!("/auth/login?rd={back}")),
        "{login}"
    );
    web.get(&login).await;
    let p = web
        .post(
            "/auth/ui/login",
            &[("login", "sso@example.com"), ("password", PW), ("rd", &app)],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location.as_deref(), Some(app.as_str()));
    let set: Vec<&str> = p
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        set.iter()
            .any(|c| c.starts_with("__Secure-authgate-access=") && c.contains("Domain=localhost")),
        "{set:?}"
    );
    // The app's host receives the shared cookie: signed in there too.
    let p = web.get(&app).await;
    assert_eq!(p.status, 200, "{}", p.html);
    let echo: serde_json::Value = serde_json::from_str(&p.html).unwrap();
    assert_eq!(echo["headers"]["x-auth-user-email"][0], "sso@example.com");
    // Signing out clears the shared cookie as well.
    web.get("/auth/ui/devices").await;
    web.post("/auth/ui/logout", &[]).await;
    assert_eq!(web.get(&app).await.status, 302);
    site.gw.stop().await;
}
