//! The hosted pages' HTTP side: GET renders a form, POST (urlencoded, with a CSRF token)
//! runs the same service calls and rate limits as the JSON API, then redirects (303) or shows
//! the form again with the API's error. No page needs JavaScript.

use super::{Result, client};
use crate::access::Door;
use crate::accounts::{AccountError, Registration, SignOut, SignedIn};
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
        "login" if get => p.login_get(app, ctx, parts).await,
        "code" if get => p.render(|v| ui::code_request(v, "")),
        "signup" if get => p.render(|v| ui::sign_up(v, &Default::default())),
        "forgot" if get => p.render(|v| ui::forgot(v, "")),
        "devices" if get => p.devices(app, parts).await,
        "email" if get => p.email_get(app, parts).await,
        "signed-out" if get => p.render(ui::signed_out),
        "style.css" | "devices" | "signed-out" => Err(ApiError::method_not_allowed()),
        _ if post => p.submit(app, ctx, name, parts, body).await,
        _ => Err(ApiError::method_not_allowed()),
    };
    let resp = resp.unwrap_or_else(|e| p.failure(&e));
    Some(p.finish(app, resp))
}

fn stylesheet() -> Result<Response<Body>> {
    let mut r = body::text_response(StatusCode::OK, "text/css; charset=utf-8", ui::STYLESHEET);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(r)
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
        let existing = auth::cookie(&parts.headers, CSRF_COOKIE).filter(|c| {
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

    /// GET of the login page. Already signed in: straight back. A valid refresh cookie (the
    /// access token expired during a browser navigation): refreshed here, then back, so the
    /// user never sees the form. Otherwise the form.
    async fn login_get(
        &self,
        app: &App,
        ctx: &RequestCtx,
        parts: &Parts,
    ) -> Result<Response<Body>> {
        let notice = match query_param(parts, "notice").as_deref() {
            Some("reset") => Some("Your password has been changed. Sign in with the new one."),
            _ => None,
        };
        if signed_in_caller(app, &parts.headers).await.is_some() {
            return Ok(self.go_back(app));
        }
        let refresh = auth::refresh_cookie(&parts.headers, app.sessions.tokens());
        let mut form = html(StatusCode::OK, ui::sign_in(&self.view(None, notice), ""));
        // Only a top-level navigation refreshes (not an image or frame another site embeds);
        // a cross-site one does, since following a link from elsewhere to a protected page
        // is exactly when the refresh should spare the user the form.
        let navigation = parts.method == Method::GET
            && parts
                .headers
                .get("sec-fetch-dest")
                .is_none_or(|d| d == "document");
        if let (Some(token), true) = (refresh, navigation) {
            match app
                .accounts
                .refresh(&token, &client(ctx, parts, None))
                .await
            {
                Ok((pair, _)) => {
                    let mut r = self.go_back(app);
                    app.cookies.set_tokens(r.headers_mut(), &pair);
                    return Ok(r);
                }
                // A revoked or expired session: forget its cookies, show the form.
                Err(AccountError::Session(
                    SessionError::Unauthenticated
                    | SessionError::Expired
                    | SessionError::Reused
                    | SessionError::Blocked,
                )) => app.cookies.clear_tokens(form.headers_mut()),
                // Over the refresh quota: the form, and the cookies for the next try.
                Err(AccountError::RateLimited(_)) => {}
                // The store failed: keep the cookies for the next try.
                Err(e) => {
                    tracing::warn!(error = %e, "transparent refresh failed");
                }
            }
        }
        Ok(form)
    }

    async fn devices(&self, app: &App, parts: &Parts) -> Result<Response<Body>> {
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "devices"));
        };
        let sessions = app.sessions.list(&caller.user_uuid).await?;
        let rows: Vec<ui::Device> = sessions
            .iter()
            .map(|s| ui::Device {
                id: s.id.clone(),
                device: s.device.clone(),
                os: s.os.clone(),
                ip: s.ip.clone(),
                created_at: when(s.created_at),
                last_seen_at: when(s.last_seen_at),
                current: s.id == caller.identity.session_id,
            })
            .collect();
        self.render(|v| ui::devices(v, &caller.identity.email, &rows))
    }

    /// A signed-in page asked for without a session: the login page, then back to it.
    fn sign_in_first(&self, app: &App, page: &str) -> Response<Body> {
        let back = self.page_url(page);
        see_other(app.login_page.url(Some(&back)).as_str())
    }

    async fn email_get(&self, app: &App, parts: &Parts) -> Result<Response<Body>> {
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "email"));
        };
        let user = app.accounts.profile(&caller.user_uuid).await?;
        self.render(|v| ui::email_change(v, &user.email, "", user.password.is_some()))
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
        match name {
            "login" => {
                let login = form.text("login").trim().to_string();
                let password = form.secret("password");
                match app
                    .accounts
                    .login_password(&login, &password, &client)
                    .await
                {
                    Ok(signed) => Ok(self.signed_in(app, &signed)),
                    Err(e) => Ok(self.refused(hint(&e), e, |v| ui::sign_in(v, &login))),
                }
            }
            "code" => match app.accounts.start_code_login(&email, &client).await {
                Ok(_) => self.notice(CODE_SENT, |v| ui::code_enter(v, &email)),
                Err(e) => Ok(self.refused(None, e, |v| ui::code_request(v, &email))),
            },
            "code/verify" => {
                let code = form.secret("code");
                let r = app
                    .accounts
                    .finish_code_login(&email, code.expose().trim(), &client)
                    .await;
                match r {
                    Ok(signed) => Ok(self.signed_in(app, &signed)),
                    Err(e) => Ok(self.refused(hint(&e), e, |v| ui::code_enter(v, &email))),
                }
            }
            "signup" => {
                let password = Some(form.secret("password")).filter(|p| !p.expose().is_empty());
                let username = form.optional("username");
                let full_name = form.optional("full_name");
                let reg = Registration {
                    email: email.clone(),
                    password,
                    username: username.clone(),
                    full_name: full_name.clone(),
                    phone: None,
                    profile: None,
                };
                match app.accounts.register(reg, &client).await {
                    Ok((_, _, signup)) => {
                        let mut page = self.notice(
                            "Account created. A verification code was sent to your email address.",
                            |v| ui::verify(v, &email),
                        )?;
                        auth::set_signup_cookie(page.headers_mut(), &signup);
                        Ok(page)
                    }
                    Err(e) => {
                        let values = ui::SignUpValues {
                            email: &email,
                            username: username.as_deref().unwrap_or(""),
                            full_name: full_name.as_deref().unwrap_or(""),
                        };
                        Ok(self.refused(hint(&e), e, |v| ui::sign_up(v, &values)))
                    }
                }
            }
            "verify" => {
                let code = form.secret("code");
                let signup = auth::cookie(&parts.headers, auth::SIGNUP_COOKIE).map(Secret::new);
                // The code proved the mailbox, as a code sign-in does: signed in at once, so
                // the newcomer lands where they were going.
                let r = app
                    .accounts
                    .verify_email(
                        &email,
                        code.expose().trim(),
                        signup.as_ref().map(Secret::expose),
                        true,
                        &client,
                    )
                    .await;
                match r.map(|v| v.signed_in) {
                    Ok(Some(signed)) => {
                        let mut r = self.signed_in(app, &signed);
                        auth::clear_signup_cookie(r.headers_mut());
                        Ok(r)
                    }
                    Ok(None) => self.notice("Your email address is verified.", |v| {
                        ui::sign_in(v, &email)
                    }),
                    Err(e) => Ok(self.refused(hint(&e), e, |v| ui::verify(v, &email))),
                }
            }
            "verify/resend" => match app.accounts.resend_verification(&email, &client).await {
                Ok(_) => self.notice(CODE_SENT, |v| ui::verify(v, &email)),
                Err(e) => Ok(self.refused(None, e, |v| ui::verify(v, &email))),
            },
            "forgot" => match app.accounts.forgot_password(&email, &client).await {
                Ok(_) => self.notice(CODE_SENT, |v| ui::reset(v, &email)),
                Err(e) => Ok(self.refused(None, e, |v| ui::forgot(v, &email))),
            },
            "reset" => {
                let code = form.secret("code");
                let new_password = form.secret("new_password");
                let r = app
                    .accounts
                    .reset_password(&email, code.expose().trim(), &new_password, &client)
                    .await;
                match r {
                    Ok(_) => {
                        let mut to = format!("{}?notice=reset", self.page_url("login"));
                        if let Some(rd) = &self.rd {
                            to.push_str("&rd=");
                            to.extend(url::form_urlencoded::byte_serialize(rd.as_bytes()));
                        }
                        let mut r = see_other(&to);
                        // Every session of the account was revoked, this browser's too.
                        app.cookies.clear_tokens(r.headers_mut());
                        Ok(r)
                    }
                    Err(e) => Ok(self.refused(hint(&e), e, |v| ui::reset(v, &email))),
                }
            }
            "email" | "email/verify" => {
                let Some(caller) = signed_in_caller(app, &parts.headers).await else {
                    return Ok(self.sign_in_first(app, "email"));
                };
                let user_id = caller.user_uuid;
                if name == "email" {
                    let password = form.optional("current_password").map(Secret::new);
                    let session = &caller.identity.session_id;
                    let r = app
                        .accounts
                        .start_email_change(&user_id, session, &email, password.as_ref(), &client)
                        .await;
                    return match r {
                        Ok(_) => self.notice("A code has been sent to the new address.", |v| {
                            ui::email_confirm(v, &email)
                        }),
                        Err(e) => {
                            let user = app.accounts.profile(&user_id).await?;
                            let has_password = user.password.is_some();
                            Ok(self.refused(None, e, |v| {
                                ui::email_change(v, &user.email, &email, has_password)
                            }))
                        }
                    };
                }
                let code = form.text("code").to_string();
                let r = app
                    .accounts
                    .finish_email_change(&user_id, &email, &code, &client)
                    .await;
                match r {
                    // Every session ended with the old address in its tokens: a new one here.
                    Ok(signed) => {
                        Ok(self.signed_in_to(&signed, see_other(&self.page_url("devices")), app))
                    }
                    Err(e) => {
                        // The hint for a taken address is about signing up, not this page.
                        let h = hint(&e).filter(|h| matches!(h, Hint::NewCode));
                        Ok(self.refused(h, e, |v| ui::email_confirm(v, &email)))
                    }
                }
            }
            "devices/revoke" | "logout" => {
                // Who is signing out: the access cookie, or (its token expired on a page left
                // open) the refresh cookie, which still names the account and session.
                let owner = match signed_in_caller(app, &parts.headers).await {
                    Some(c) => Some((c.user_uuid, c.identity.session_id.clone())),
                    None => match auth::refresh_cookie(&parts.headers, app.sessions.tokens()) {
                        Some(t) => app.sessions.refresh_owner(&t).await?,
                        None => None,
                    },
                };
                let Some((user_id, current)) = owner else {
                    let mut r = see_other(&self.page_url("signed-out"));
                    app.cookies.clear_tokens(r.headers_mut());
                    return Ok(r);
                };
                let which = match (name, form.text("all")) {
                    ("logout", "1") => SignOut::Everywhere,
                    ("logout", _) => SignOut::This,
                    _ => SignOut::Sessions(vec![form.text("session").to_string()]),
                };
                let out = app.accounts.sign_out(&user_id, &current, which).await?;
                if out.this_one {
                    let mut r = see_other(&self.page_url("signed-out"));
                    app.cookies.clear_tokens(r.headers_mut());
                    Ok(r)
                } else {
                    Ok(see_other(&self.page_url("devices")))
                }
            }
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
    auth::cookie(&parts.headers, auth::DEVICE_COOKIE).map(Secret::new)
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
