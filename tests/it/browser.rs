//! The hosted pages in a real headless Chromium, driven over WebDriver (chromedriver +
//! fantoccini): sign up and land on the protected page, sign out, sign in by code, reset a
//! forgotten password, sign out another device, an open redirect refused. Every flow runs
//! twice: with JavaScript on, and with it off (the pages must not need it). Screenshots of
//! each page go to `target/browser-artifacts/`.

use crate::external::{free_port, require, wait_port};
use crate::pages::{Site, site};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::Stdio;

struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and the browsers it started share a process group: end them all, so a
        // failed test leaves no Chromium behind.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
    }
}

async fn chromedriver(path: PathBuf) -> Driver {
    let port = free_port();
    let child = tokio::process::Command::new(path)
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_port(port, "chromedriver").await;
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A new headless Chromium session with its own profile (its own cookies).
async fn browser(driver: &Driver, js: bool, profile: &std::path::Path) -> Client {
    browser_with(driver, js, profile, &[]).await
}

async fn browser_with(
    driver: &Driver,
    js: bool,
    profile: &std::path::Path,
    extra: &[&str],
) -> Client {
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-dev-shm-usage".into(),
        "--window-size=900,1000".into(),
        format!("--user-data-dir={}", profile.display()),
    ];
    if !js {
        args.push("--blink-settings=scriptEnabled=false".into());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": chromium_binary(), "args": args }),
    );
    // The gateway's certificate is the self-signed development one.
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn chromium_binary() -> String {
    crate::external::find("chromium")
        .or_else(|| crate::external::find("chromium-browser"))
        .or_else(|| crate::external::find("google-chrome"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "chromium".into())
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
}

async fn path_of(c: &Client) -> String {
    let u = c.current_url().await.unwrap();
    match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    }
}

async fn fill(c: &Client, name: &str, value: &str) {
    let e = match c.find(Locator::Css(&format!("input[name='{name}']"))).await {
        Ok(e) => e,
        Err(err) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let page = c.source().await.unwrap_or_default();
            panic!("no input {name} at {url}: {err}\n{page}");
        }
    };
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn submit(c: &Client, form_action_suffix: &str) {
    c.find(Locator::Css(&format!(
        "form[action$='{form_action_suffix}'] button[type='submit']"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
}

async fn heading(c: &Client) -> String {
    match c.find(Locator::Css("h1")).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (a click's navigation may still be under way) until the page's heading is `want`.
async fn expect_heading(c: &Client, want: &str) {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = heading(c).await;
        if seen == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let url = c
        .current_url()
        .await
        .map(|u| u.to_string())
        .unwrap_or_default();
    panic!("heading {seen:?} at {url}, expected {want:?}");
}

/// Waits until the browser is at `want` (path and query).
async fn expect_path(c: &Client, want: &str) {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = path_of(c).await;
        if seen == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("at {seen:?}, expected {want:?}");
}

/// Drops every cookie, as a new browser would have none. WebDriver deletes only the cookies
/// the current page can see, and the refresh cookie lives under the auth prefix.
async fn forget_cookies(c: &Client, base: &str) {
    c.goto(&format!("{base}/auth/ui/signed-out")).await.unwrap();
    c.delete_all_cookies().await.unwrap();
}

/// The flows of the issue, for one browser setting.
async fn flows(site: &Site, driver: &Driver, js: bool) {
    let tag = if js { "js" } else { "nojs" };
    let email = format!("browser-{tag}@example.com");
    let profiles = tempfile::tempdir().unwrap();
    let base = format!("https://localhost:{}", site.port);
    let pw = "correct horse battery staple";
    let c = browser(driver, js, &profiles.path().join("a")).await;
    // Scripts are really on, or really off, in this session.
    c.goto(
        "data:text/html,<h1>off</h1><script>document.querySelector('h1').textContent='on'</script>",
    )
    .await
    .unwrap();
    expect_heading(&c, if js { "on" } else { "off" }).await;

    // Sign up from a protected page; the code comes from the real SMTP server.
    c.goto(&format!("{base}/app/page?from=browser"))
        .await
        .unwrap();
    expect_path(&c, "/auth/login?rd=%2Fapp%2Fpage%3Ffrom%3Dbrowser").await;
    expect_heading(&c, "Sign in").await;
    shot(&c, &format!("{tag}-01-login")).await;
    // And on a phone's screen: the form fills the width, nothing scrolls sideways.
    c.set_window_size(390, 844).await.unwrap();
    let width = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .rectangle()
        .await
        .unwrap()
        .2;
    assert!(
        width <= 390.0,
        "the page fits a phone: main is {width}px wide"
    );
    shot(&c, &format!("{tag}-01-login-phone")).await;
    c.set_window_size(900, 1000).await.unwrap();
    c.find(Locator::LinkText("Create an account"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    expect_heading(&c, "Create an account").await;
    shot(&c, &format!("{tag}-02-signup")).await;
    fill(&c, "email", &email).await;
    fill(&c, "password", pw).await;
    submit(&c, "/signup").await;
    expect_heading(&c, "Verify your email").await;
    shot(&c, &format!("{tag}-03-verify")).await;
    let code = site.smtp.nth_to(&email, 1).await.code();
    // A wrong code first: the same page, the API's message announced, the field marked.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    fill(&c, "code", wrong).await;
    submit(&c, "/verify").await;
    expect_heading(&c, "Verify your email").await;
    let alert = c.find(Locator::Css("[role='alert']")).await.unwrap();
    assert!(alert.text().await.unwrap().to_lowercase().contains("code"));
    shot(&c, &format!("{tag}-03-verify-error")).await;
    fill(&c, "code", &code).await;
    submit(&c, "/verify").await;
    expect_path(&c, "/app/page?from=browser").await;
    let body = c.source().await.unwrap();
    assert!(
        body.contains(&email),
        "the upstream saw the identity: {body}"
    );
    shot(&c, &format!("{tag}-04-landed")).await;

    // Sign out from the devices page.
    c.goto(&format!("{base}/auth/ui/devices")).await.unwrap();
    expect_heading(&c, "Your devices").await;
    shot(&c, &format!("{tag}-05-devices")).await;
    c.find(Locator::Css("button[aria-label^='Sign out this device']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    expect_heading(&c, "Signed out").await;
    shot(&c, &format!("{tag}-06-signed-out")).await;
    c.goto(&format!("{base}/app/page")).await.unwrap();
    expect_heading(&c, "Sign in").await;

    // Sign in by code.
    c.find(Locator::LinkText("Sign in with a code sent to your email"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&c, "email", &email).await;
    submit(&c, "/code").await;
    expect_heading(&c, "Enter your code").await;
    shot(&c, &format!("{tag}-07-code")).await;
    let code = site.smtp.nth_to(&email, 2).await.code();
    fill(&c, "code", &code).await;
    submit(&c, "/code/verify").await;
    expect_path(&c, "/app/page").await;

    // Sign out another device: a second browser signs in, the first signs it out.
    let other = browser(driver, js, &profiles.path().join("b")).await;
    other.goto(&format!("{base}/app/other")).await.unwrap();
    fill(&other, "login", &email).await;
    fill(&other, "password", pw).await;
    submit(&other, "/login").await;
    expect_path(&other, "/app/other").await;
    c.goto(&format!("{base}/auth/ui/devices")).await.unwrap();
    let buttons = c
        .find_all(Locator::Css("form[action$='/devices/revoke'] button"))
        .await
        .unwrap();
    assert_eq!(buttons.len(), 2);
    c.find(Locator::Css(
        "form[action$='/devices/revoke'] button:not([aria-label^='Sign out this device'])",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    expect_heading(&c, "Your devices").await;
    // The page before the form's answer has the same heading: wait for the new one.
    let mut left = 0;
    for _ in 0..100 {
        left = c
            .find_all(Locator::Css("form[action$='/devices/revoke'] button"))
            .await
            .unwrap()
            .len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(left, 1);
    other.goto(&format!("{base}/app/other")).await.unwrap();
    expect_heading(&other, "Sign in").await;
    other.close().await.unwrap();

    // Reset a forgotten password (on the signed-out device), then sign in with it and come
    // back to the page asked for.
    forget_cookies(&c, &base).await;
    c.goto(&format!("{base}/app/after-reset")).await.unwrap();
    c.find(Locator::LinkText("Forgot your password?"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&c, "email", &email).await;
    submit(&c, "/forgot").await;
    expect_heading(&c, "Choose a new password").await;
    shot(&c, &format!("{tag}-08-reset")).await;
    let code = site.smtp.nth_to(&email, 3).await.code();
    let new_pw = format!("a new passphrase for the {tag} run");
    fill(&c, "code", &code).await;
    fill(&c, "new_password", &new_pw).await;
    submit(&c, "/reset").await;
    expect_heading(&c, "Sign in").await;
    assert!(
        c.source()
            .await
            .unwrap()
            .contains("Your password has been changed")
    );
    fill(&c, "login", &email).await;
    fill(&c, "password", &new_pw).await;
    submit(&c, "/login").await;
    expect_path(&c, "/app/after-reset").await;

    // Change the email address from the devices page: the password, then the code that the
    // new address receives.
    c.goto(&format!("{base}/auth/ui/devices")).await.unwrap();
    c.find(Locator::LinkText("Change your email address"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    expect_heading(&c, "Change your email address").await;
    let moved = format!("moved-{tag}@example.com");
    fill(&c, "email", &moved).await;
    fill(&c, "current_password", &new_pw).await;
    submit(&c, "/email").await;
    expect_heading(&c, "Confirm your new address").await;
    shot(&c, &format!("{tag}-09-email")).await;
    let code = site.smtp.nth_to(&moved, 1).await.code();
    fill(&c, "code", &code).await;
    submit(&c, "/email/verify").await;
    expect_heading(&c, "Your devices").await;
    assert!(c.source().await.unwrap().contains(&moved));

    // An open redirect attempt: the foreign return URL is dropped, the browser stays here.
    forget_cookies(&c, &base).await;
    c.goto(&format!(
        "{base}/auth/login?rd=https%3A%2F%2Fevil.test%2Fsteal"
    ))
    .await
    .unwrap();
    fill(&c, "login", &moved).await;
    fill(&c, "password", &new_pw).await;
    submit(&c, "/login").await;
    // Signed in, and sent to "/" of this site instead (waited for: the next step needs the
    // sign-in's cookies).
    expect_path(&c, "/").await;
    let u = c.current_url().await.unwrap();
    assert_eq!(
        u.host_str(),
        Some("localhost"),
        "not sent to evil.test: {u}"
    );

    // Two-step verification from the security page: the key read off the page, a code from
    // it (RFC 6238, computed here), then the recovery codes.
    c.goto(&format!("{base}/auth/ui/devices")).await.unwrap();
    c.find(Locator::LinkText("Two-step verification"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    expect_heading(&c, "Security").await;
    shot(&c, &format!("{tag}-10-security")).await;
    fill(&c, "current_password", &new_pw).await;
    submit(&c, "/security/totp").await;
    expect_heading(&c, "Set up your authenticator").await;
    assert!(
        c.find(Locator::Css(".qr svg")).await.is_ok(),
        "the QR code is drawn on the page"
    );
    shot(&c, &format!("{tag}-11-totp-enrol")).await;
    let secret = c
        .find(Locator::Css("#totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let now = || authgate::clock::Clock::unix_now(&authgate::clock::SystemClock);
    fill(&c, "code", &crate::second_factors::totp(&secret, now())).await;
    submit(&c, "/security/totp/confirm").await;
    expect_heading(&c, "Your recovery codes").await;
    shot(&c, &format!("{tag}-12-recovery-codes")).await;
    let codes = c
        .find_all(Locator::Css("#recovery-codes li"))
        .await
        .unwrap();
    assert_eq!(codes.len(), 10);
    let recovery = codes[0].text().await.unwrap();
    // This session signed in with the password alone: a route that needs two factors sends
    // it to the step-up page, and a code brings it back.
    c.goto(&format!("{base}/vault/report")).await.unwrap();
    expect_heading(&c, "Confirm it is you").await;
    shot(&c, &format!("{tag}-13-step-up")).await;
    fill(
        &c,
        "code",
        &crate::second_factors::totp(&secret, now() + 30),
    )
    .await;
    submit(&c, "/step-up").await;
    expect_path(&c, "/vault/report").await;
    // A new sign-in asks for the second factor; a recovery code does it.
    forget_cookies(&c, &base).await;
    c.goto(&format!("{base}/vault/again")).await.unwrap();
    expect_heading(&c, "Sign in").await;
    fill(&c, "login", &moved).await;
    fill(&c, "password", &new_pw).await;
    submit(&c, "/login").await;
    expect_heading(&c, "Two-step verification").await;
    let code_input = c.find(Locator::Css("input[name='code']")).await.unwrap();
    assert_eq!(
        code_input.attr("autocomplete").await.unwrap().as_deref(),
        Some("one-time-code")
    );
    shot(&c, &format!("{tag}-14-second-factor")).await;
    fill(&c, "code", "00000-00000").await;
    submit(&c, "/mfa").await;
    expect_heading(&c, "Two-step verification").await;
    assert!(c.find(Locator::Css("[role='alert']")).await.is_ok());
    fill(&c, "code", &recovery).await;
    submit(&c, "/mfa").await;
    expect_path(&c, "/vault/again").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn hosted_pages_in_headless_chromium() {
    let Some(driver_path) = require("chromedriver", "hosted_pages_in_headless_chromium") else {
        return;
    };
    if crate::external::find("chromium").is_none() {
        require("chromium", "hosted_pages_in_headless_chromium");
        return;
    }
    let site = site(None, "").await;
    let driver = chromedriver(driver_path).await;
    flows(&site, &driver, true).await;
    flows(&site, &driver, false).await;
    site.gw.stop().await;
}

/// A command of WebDriver's WebAuthn extension (WebAuthn Level 3, 11.3), at
/// `session/{id}/webauthn/{path}`.
#[derive(Debug)]
struct WebAuthnCmd {
    method: http::Method,
    path: String,
    body: Option<serde_json::Value>,
}

impl WebAuthnCmd {
    /// A virtual authenticator: CTAP2, internal, resident keys, user verification that
    /// succeeds. Answers its id.
    fn add_authenticator() -> Self {
        WebAuthnCmd {
            method: http::Method::POST,
            path: "authenticator".into(),
            body: Some(serde_json::json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": true,
            })),
        }
    }
    fn remove_authenticator(id: &str) -> Self {
        WebAuthnCmd {
            method: http::Method::DELETE,
            path: format!("authenticator/{id}"),
            body: None,
        }
    }
    /// The credentials an authenticator holds, private keys included.
    fn credentials(id: &str) -> Self {
        WebAuthnCmd {
            method: http::Method::GET,
            path: format!("authenticator/{id}/credentials"),
            body: None,
        }
    }
    fn add_credential(id: &str, credential: serde_json::Value) -> Self {
        WebAuthnCmd {
            method: http::Method::POST,
            path: format!("authenticator/{id}/credential"),
            body: Some(credential),
        }
    }
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthnCmd {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/webauthn/{}",
            session.unwrap_or_default(),
            self.path
        ))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(|b| b.to_string()),
        )
    }
}

/// Clicks the first element matching `css`, once it is shown (the script shows the passkey
/// controls once it has run).
async fn click_shown(c: &Client, css: &str) {
    for _ in 0..100 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.is_displayed().await.unwrap_or(false) {
                e.click().await.unwrap();
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{css} is not shown at {:?}", c.current_url().await);
}

/// Passkeys in a real browser with WebDriver's virtual authenticator: added on the security
/// page, signed out, then a passwordless sign-in from the login page, then a password and a
/// mailed-code sign-in, each with the passkey as its second factor. With scripts off, no
/// passkey control is shown.
#[tokio::test]
async fn passkeys_in_headless_chromium() {
    let Some(driver_path) = require("chromedriver", "passkeys_in_headless_chromium") else {
        return;
    };
    if crate::external::find("chromium").is_none() {
        require("chromium", "passkeys_in_headless_chromium");
        return;
    }
    let site = site(None, "").await;
    let driver = chromedriver(driver_path).await;
    let base = format!("https://localhost:{}", site.port);
    let email = "passkey-browser@example.com";
    let pw = "correct horse battery staple";
    crate::seeds::register_verified(
        &site.gw,
        &site.smtp,
        serde_json::json!({"email": email, "password": pw}),
    )
    .await;
    let profiles = tempfile::tempdir().unwrap();
    // WebAuthn is refused on a page with a certificate error: the development certificate
    // is trusted for this browser instead of merely accepted.
    let c = browser_with(
        &driver,
        true,
        &profiles.path().join("pk"),
        &["--ignore-certificate-errors"],
    )
    .await;
    let authenticator = c.issue_cmd(WebAuthnCmd::add_authenticator()).await.unwrap();
    let authenticator = authenticator
        .as_str()
        .expect("an authenticator id")
        .to_string();

    // Signed in by password, a passkey is added from the security page.
    c.goto(&format!("{base}/auth/ui/security")).await.unwrap();
    expect_heading(&c, "Sign in").await;
    fill(&c, "login", email).await;
    fill(&c, "password", pw).await;
    submit(&c, "/login").await;
    expect_heading(&c, "Security").await;
    fill_id(&c, "passkey-name", "Chromium").await;
    fill_id(&c, "passkey-password", pw).await;
    click_shown(&c, "button[data-passkey='add']").await;
    for _ in 0..100 {
        if c.source().await.unwrap().contains("Chromium</strong>") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        c.source().await.unwrap().contains("Chromium</strong>"),
        "the passkey is listed"
    );
    shot(&c, "passkey-01-security").await;

    // Signed out, the login page signs in with the passkey alone: its autofill request
    // (`mediation: "conditional"`) is answered by the virtual authenticator, which consents
    // at once, as a person picking the passkey from the username field's suggestions does.
    c.goto(&format!("{base}/auth/ui/devices")).await.unwrap();
    expect_heading(&c, "Your devices").await;
    c.find(Locator::Css("button[aria-label^='Sign out this device']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    expect_heading(&c, "Signed out").await;
    c.goto(&format!("{base}/app/with-passkey")).await.unwrap();
    expect_path(&c, "/app/with-passkey").await;
    // Two factors by itself: the route that needs them lets it in.
    c.goto(&format!("{base}/vault/x")).await.unwrap();
    expect_path(&c, "/vault/x").await;

    // A password, then the passkey as the second factor. The login page's autofill request
    // would be answered at once by an authenticator holding the passkey, so the passkey
    // leaves the browser for the password step (as a phone kept in a pocket) and comes back
    // on the second-step page: the same credential, moved to a new virtual authenticator.
    let held = c
        .issue_cmd(WebAuthnCmd::credentials(&authenticator))
        .await
        .unwrap();
    let held = held.as_array().expect("credentials").clone();
    assert_eq!(held.len(), 1, "one resident credential: {held:?}");
    c.issue_cmd(WebAuthnCmd::remove_authenticator(&authenticator))
        .await
        .unwrap();
    forget_cookies(&c, &base).await;
    c.goto(&format!("{base}/app/password-then-passkey"))
        .await
        .unwrap();
    expect_heading(&c, "Sign in").await;
    fill(&c, "login", email).await;
    fill(&c, "password", pw).await;
    submit(&c, "/login").await;
    expect_heading(&c, "Two-step verification").await;
    let pocket = c.issue_cmd(WebAuthnCmd::add_authenticator()).await.unwrap();
    let pocket = pocket.as_str().expect("an authenticator id").to_string();
    c.issue_cmd(WebAuthnCmd::add_credential(&pocket, held[0].clone()))
        .await
        .unwrap();
    click_shown(&c, "button[data-passkey='second-factor']").await;
    expect_path(&c, "/app/password-then-passkey").await;
    // Two factors: the route that needs them lets it in without a step-up.
    c.goto(&format!("{base}/vault/after-password"))
        .await
        .unwrap();
    expect_path(&c, "/vault/after-password").await;

    forget_cookies(&c, &base).await;
    // A first factor (a mailed code: the code page offers no autofill to race with) asks
    // for the second; the passkey gives it.
    c.goto(&format!("{base}/auth/ui/code?rd=%2Fapp%2Fsecond"))
        .await
        .unwrap();
    fill(&c, "email", email).await;
    submit(&c, "/code").await;
    expect_heading(&c, "Enter your code").await;
    let code = site.smtp.nth_to(email, 2).await.code();
    fill(&c, "code", &code).await;
    submit(&c, "/code/verify").await;
    expect_heading(&c, "Two-step verification").await;
    shot(&c, "passkey-03-second-factor").await;
    click_shown(&c, "button[data-passkey='second-factor']").await;
    expect_path(&c, "/app/second").await;
    c.close().await.unwrap();

    // Without scripts the passkey controls stay hidden, and the rest works.
    let off = browser(&driver, false, &profiles.path().join("nojs")).await;
    off.goto(&format!("{base}/auth/login")).await.unwrap();
    expect_heading(&off, "Sign in").await;
    shot(&off, "passkey-02-login-nojs").await;
    let button = off
        .find(Locator::Css("button[data-passkey='login']"))
        .await
        .unwrap();
    assert!(
        !button.is_displayed().await.unwrap(),
        "hidden without scripts"
    );
    fill(&off, "login", email).await;
    fill(&off, "password", pw).await;
    submit(&off, "/login").await;
    expect_heading(&off, "Two-step verification").await;
    let second = off
        .find(Locator::Css("button[data-passkey='second-factor']"))
        .await
        .unwrap();
    assert!(!second.is_displayed().await.unwrap());
    off.close().await.unwrap();
    site.gw.stop().await;
}

async fn fill_id(c: &Client, id: &str, value: &str) {
    let e = c.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}
