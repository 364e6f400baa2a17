//! The hosted pages' HTTP side: GET renders a form, POST (urlencoded, with a CSRF token)
//! runs the same service calls and rate limits as the JSON API, then redirects (303) or shows
//! the form again with the API's error. No page needs JavaScript but for passkeys. One file per group of
//! flows; this one holds what every page shares.

mod account;
mod recovery;
mod security;
mod sign_in;
mod sign_up;

use super::{Result, client};
use crate::access::Door;
use crate::accounts::{AccountError, Client, Registration, SignOut, SignedIn};
use crate::http::body::{self, Body};
use crate::http::error::ApiError;
use crate::http::{App, RequestCtx, auth, json};
use crate::policy::Rule;
use crate::secret::{Secret, ct_eq};
use crate::sessions::SessionError;
use crate::store::UniqueField;
use crate::tokens::Verified;
use crate::ui::{self, FormError, Hint, View};
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request::Parts};
use hyper::body::Incoming;
use std::collections::HashMap;

use auth::CSRF_COOKIE;

/// Every page path (for 405 on a wrong method).
const PAGES: &[&str] = &[
    "style.css",
    "passkeys.js",
    "login",
    "code",
    "code/verify",
    "signup",
    "verify",
    "verify/resend",
    "forgot",
    "reset",
    "devices",
    "devices/revoke",
    "email",
    "email/verify",
    "logout",
    "signed-out",
    "mfa",
    "step-up",
    "security",
    "security/totp",
    "security/totp/confirm",
    "security/totp/remove",
    "security/recovery-codes",
    "security/passkeys/rename",
    "security/passkeys/remove",
];

/// Routes `{prefix}/ui/...` (and `GET {prefix}/login`); `None` for paths that are not pages.
pub async fn handle(
    app: &App,
    ctx: &RequestCtx,
    page: &[&str],
    parts: &Parts,
    body: Incoming,
) -> Option<Response<Body>> {
    let name = page.join("/");
    let name = name.as_str();
    if !PAGES.contains(&name) {
        return None;
    }
    let get = parts.method == Method::GET || parts.method == Method::HEAD;
    let post = parts.method == Method::POST;
    let mut p = Page::new(app, parts);
    let resp = match name {
        "style.css" if get => stylesheet(),
        "passkeys.js" if get => script(),
        "login" if get => p.login_get(app, ctx, parts).await,
        "code" if get => p.render(|v| ui::code_request(v, "")),
        "signup" if get => p.render(|v| ui::sign_up(v, &Default::default())),
        "forgot" if get => p.render(|v| ui::forgot(v, "")),
        "devices" if get => p.devices(app, parts).await,
        "email" if get => p.email_get(app, parts).await,
        "signed-out" if get => p.render(ui::signed_out),
        "step-up" if get => p.step_up_get(app, parts).await,
        "security" if get => p.security_get(app, parts).await,
        "style.css" | "devices" | "signed-out" | "security" => Err(ApiError::method_not_allowed()),
        _ if post => p.submit(app, ctx, name, parts, body).await,
        _ => Err(ApiError::method_not_allowed()),
    };
    let resp = resp.unwrap_or_else(|e| p.failure(&e));
    Some(p.finish(app, resp))
}

fn script() -> Result<Response<Body>> {
    let mut r = body::text_response(StatusCode::OK, "text/javascript; charset=utf-8", ui::SCRIPT);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(r)
}

fn stylesheet() -> Result<Response<Body>> {
    let mut r = body::text_response(StatusCode::OK, "text/css; charset=utf-8", ui::STYLESHEET);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(r)
}

/// What every form's flow reads besides the form: the app, the request's parts, which page
/// was posted, the caller as the account flows see it, and the form's `email` (most have one).
#[derive(Clone, Copy)]
struct Post<'a> {
    app: &'a App,
    parts: &'a Parts,
    name: &'a str,
    client: &'a Client<'a>,
    email: &'a str,
}

/// The parsed form of a POST: first value of each name.
struct Form(HashMap<String, String>);

impl Form {
    fn text(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }
    fn secret(&mut self, name: &str) -> Secret {
        Secret::new(self.0.remove(name).unwrap_or_default())
    }
    fn optional(&self, name: &str) -> Option<String> {
        Some(self.text(name).trim())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }
}

/// What one page request carries along: its CSRF token, its return URL, the prefix.
struct Page {
    prefix: String,
    csrf: String,
    /// Set when the CSRF cookie must be (re)issued with this response.
    new_csrf: bool,
    /// Set at sign-in: a new token for the new session, whatever the page.
    rotate_csrf: bool,
    rd: Option<String>,
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    crate::http::query_param(&parts.uri, name)
}

impl Page {
    fn new(app: &App, parts: &Parts) -> Self {
        // The token goes into every form this page renders: it is the page's to show.
        let existing = auth::cookie(&parts.headers, CSRF_COOKIE)
            .map(|c| c.expose().to_string())
            .filter(|c| {
                c.len() == 43
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        let (csrf, new_csrf) = match existing {
            Some(c) => (c, false),
            None => (new_token(), true),
        };
        let mut p = Page {
            prefix: app.config.server.auth_prefix.to_string(),
            csrf,
            new_csrf,
            rotate_csrf: false,
            rd: None,
        };
        p.set_rd(app, query_param(parts, "rd"));
        p
    }

    /// Keeps a return URL only if the redirect policy allows it (no open redirect).
    fn set_rd(&mut self, app: &App, rd: Option<String>) {
        self.rd = rd.filter(|r| !r.is_empty() && app.login_page.policy().allowed(r));
    }

    fn view<'a>(&'a self, error: Option<&'a FormError>, notice: Option<&'a str>) -> View<'a> {
        View {
            prefix: &self.prefix,
            csrf: &self.csrf,
            rd: self.rd.as_deref(),
            error,
            notice,
        }
    }

    fn render(&self, f: impl FnOnce(&View) -> maud::Markup) -> Result<Response<Body>> {
        Ok(html(StatusCode::OK, f(&self.view(None, None))))
    }

    fn render_error(
        &self,
        e: &ApiError,
        hint: Option<Hint>,
        f: impl FnOnce(&View) -> maud::Markup,
    ) -> Response<Body> {
        let fe = FormError {
            message: e.message.to_string(),
            fields: e.fields.clone().unwrap_or_default(),
            hint,
        };
        let mut r = html(e.status, f(&self.view(Some(&fe), None)));
        if let Some(after) = e.retry_after {
            if let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }

    fn notice(&self, text: &str, f: impl FnOnce(&View) -> maud::Markup) -> Result<Response<Body>> {
        Ok(html(StatusCode::OK, f(&self.view(None, Some(text)))))
    }

    /// Where to go after signing in: the return URL, or the site's root.
    fn target(&self) -> &str {
        self.rd.as_deref().unwrap_or("/")
    }

    /// Back to the return URL, unless the browser would not take the sign-in there (a host
    /// outside the cookie's reach would send it straight back here, in a loop): then a page
    /// that says so.
    fn go_back(&self, app: &App) -> Response<Body> {
        let target = self.target();
        let foreign = url::Url::parse(target)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .filter(|h| !app.cookies.reach(h));
        match foreign {
            None => see_other(target),
            Some(host) => html(
                StatusCode::OK,
                ui::message(
                    &self.view(None, None),
                    "You are signed in",
                    &format!(
                        "{host} does not receive this sign-in (its cookies are not shared with \
                         this gateway), so it cannot let you in. Its administrator can share \
                         them with server.cookie_domain."
                    ),
                ),
            ),
        }
    }

    fn page_url(&self, page: &str) -> String {
        format!("{}/ui/{page}", self.prefix)
    }

    /// Adds the page headers: the CSRF cookie when new, the CSP on HTML answers.
    fn finish(&self, app: &App, mut r: Response<Body>) -> Response<Body> {
        let h = r.headers_mut();
        let is_html = h
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
        // Only pages carry forms; a stylesheet or a redirect needs no token.
        if (self.new_csrf && is_html) || self.rotate_csrf {
            let c = Cookie::build((CSRF_COOKIE, self.csrf.clone()))
                .path("/")
                .secure(true)
                .http_only(true)
                .same_site(SameSite::Lax)
                .build();
            if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
                h.append(header::SET_COOKIE, v);
            }
        }
        if is_html {
            h.insert(header::CONTENT_SECURITY_POLICY, app.page_csp.clone());
        }
        r
    }

    /// An error outside any form (a body too large, an expired form): a page that says so.
    fn failure(&self, e: &ApiError) -> Response<Body> {
        self.render_error(e, None, |v| {
            ui::message(v, "Something went wrong", &e.message)
        })
    }

    /// A signed-in page asked for without a session: the login page, then back to it.
    fn sign_in_first(&self, app: &App, page: &str) -> Response<Body> {
        let back = self.page_url(page);
        see_other(app.login_page.url(Some(&back)).as_str())
    }

    async fn submit(
        &mut self,
        app: &App,
        ctx: &RequestCtx,
        name: &str,
        parts: &Parts,
        body: Incoming,
    ) -> Result<Response<Body>> {
        let mut form = read_form(app, parts, body).await?;
        // Double submit: the token in the form must equal the cookie, which only our own
        // pages could have read. A post from another origin (even a sibling subdomain) is
        // refused before that; browsers too old to say where a post came from rely on the
        // token alone.
        let other_origin = parts
            .headers
            .get("sec-fetch-site")
            .is_some_and(|v| v != "same-origin" && v != "none");
        if self.new_csrf
            || other_origin
            || !ct_eq(self.csrf.as_bytes(), form.text("csrf").as_bytes())
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "This form has expired or did not come from this site. Go back, reload the page and try again.",
            ));
        }
        self.set_rd(app, form.optional("rd"));
        let device = device_cookie(parts);
        let client = client(ctx, parts, device.as_ref());
        let email = form.text("email").trim().to_string();
        let post = Post {
            app,
            parts,
            name,
            client: &client,
            email: &email,
        };
        match name {
            "login" => self.login(&post, &mut form).await,
            "code" => self.code(&post).await,
            "code/verify" => self.code_verify(&post, &mut form).await,
            "signup" => self.sign_up(&post, &mut form).await,
            "verify" => self.verify(&post, &mut form).await,
            "verify/resend" => self.verify_resend(&post).await,
            "forgot" => self.forgot(&post).await,
            "reset" => self.reset(&post, &mut form).await,
            "email" | "email/verify" => self.email(&post, &mut form).await,
            "devices/revoke" | "logout" => self.sign_out(&post, &mut form).await,
            "mfa" => self.second_factor(&post, &mut form).await,
            "step-up" => self.step_up(&post, &mut form).await,
            "security/totp"
            | "security/totp/confirm"
            | "security/totp/remove"
            | "security/recovery-codes"
            | "security/passkeys/rename"
            | "security/passkeys/remove" => self.security(&post, &mut form).await,
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    /// A sign-in succeeded: its cookies, and back to where the user was going.
    fn signed_in(&mut self, app: &App, signed: &SignedIn) -> Response<Body> {
        let back = self.go_back(app);
        self.signed_in_to(signed, back, app)
    }

    /// `r` with a sign-in's cookies, and a new CSRF token for the new session.
    fn signed_in_to(
        &mut self,
        signed: &SignedIn,
        mut r: Response<Body>,
        app: &App,
    ) -> Response<Body> {
        self.csrf = new_token();
        self.rotate_csrf = true;
        app.cookies.set_tokens(r.headers_mut(), &signed.pair);
        auth::set_device_cookie(r.headers_mut(), &signed.device);
        r
    }

    /// A code-sending form's answer: the form for the code with the notice that it was
    /// sent (whether or not the address has an account), or this form again with the error.
    fn code_sent(
        &self,
        r: std::result::Result<time::OffsetDateTime, AccountError>,
        email: &str,
        next: fn(&View, &str) -> maud::Markup,
        again: fn(&View, &str) -> maud::Markup,
    ) -> Result<Response<Body>> {
        match r {
            Ok(_) => self.notice(CODE_SENT, |v| next(v, email)),
            Err(e) => Ok(self.refused(None, e, |v| again(v, email))),
        }
    }

    /// A flow refused: the form again, with the error and the `hint` for the next step.
    fn refused(
        &self,
        hint: Option<Hint>,
        e: AccountError,
        f: impl FnOnce(&View) -> maud::Markup,
    ) -> Response<Body> {
        self.render_error(&ApiError::from(e), hint, f)
    }
}

/// The device cookie a browser presents (see `accounts::bindings`).
fn device_cookie(parts: &Parts) -> Option<Secret> {
    auth::cookie(&parts.headers, auth::DEVICE_COOKIE)
}

const CODE_SENT: &str = "If an account exists for this address, a code has been sent to it.";

/// Extra help for the errors where the next step is not obvious.
fn hint(e: &AccountError) -> Option<Hint> {
    match e {
        AccountError::EmailNotVerified => Some(Hint::SignInByCode),
        // The address is taken: its owner can sign in by code (and reclaim an account someone
        // else registered with it).
        AccountError::AlreadyExists(UniqueField::Email) => Some(Hint::SignInByCode),
        AccountError::OtpExpired | AccountError::AttemptsExceeded { .. } => Some(Hint::NewCode),
        _ => None,
    }
}

/// The signed-in caller, by the gate at the pages' door (the access cookie only).
async fn signed_in_caller(app: &App, headers: &HeaderMap) -> Option<std::sync::Arc<Verified>> {
    let creds = app.gate.credentials(headers, Door::Pages);
    let access = app.gate.check(&creds, Rule::signed_in()).await.ok()?;
    access.into_verified()
}

/// Reads an urlencoded form within the account endpoints' body limits.
async fn read_form(app: &App, parts: &Parts, body: Incoming) -> Result<Form> {
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the form as application/x-www-form-urlencoded.",
        ));
    }
    let a = &app.config.accounts;
    let bytes = json::read_body(&parts.headers, body, a.max_body_bytes, a.body_timeout).await?;
    let mut map = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    Ok(Form(map))
}

/// A time for people: "2026-11-22 13:05 UTC".
fn when(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

fn new_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn html(status: StatusCode, page: maud::Markup) -> Response<Body> {
    body::text_response(status, "text/html; charset=utf-8", page.into_string())
}

fn see_other(location: &str) -> Response<Body> {
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
