//! The hosted pages: server-rendered HTML with no external asset and one first-party script
//! (passkeys only), checked at compile time by maud (every interpolation is escaped). Rendering only: the form handling
//! lives in `http::handlers::pages`, which calls the same services as the JSON API.

mod factors;

pub use factors::{
    PasskeyRow, Security, recovery_codes, second_factor, security, step_up, totp_enrol,
};

use maud::{DOCTYPE, Markup, html};
use std::collections::BTreeMap;

/// The one stylesheet, served at `{prefix}/ui/style.css`.
pub const STYLESHEET: &str = include_str!("style.css");

/// The one script (passkeys), served at `{prefix}/ui/passkeys.js`.
pub const SCRIPT: &str = include_str!("passkeys.js");

/// What every page needs besides its own content.
#[derive(Debug)]
pub struct View<'a> {
    /// The auth prefix, for links and form actions.
    pub prefix: &'a str,
    /// The form's CSRF token (the value of the CSRF cookie).
    pub csrf: &'a str,
    /// Where to go after signing in, already checked against the redirect policy.
    pub rd: Option<&'a str>,
    /// The error of the last submission, in the API's words.
    pub error: Option<&'a FormError>,
    /// A neutral message ("a code was sent").
    pub notice: Option<&'a str>,
}

/// An error to show on a form: the API's message and, per field, what is wrong.
#[derive(Debug, Default)]
pub struct FormError {
    pub message: String,
    pub fields: BTreeMap<String, String>,
    /// Extra help beside the message (a link to sign in by code, for instance).
    pub hint: Option<Hint>,
}

#[derive(Debug, Clone, Copy)]
pub enum Hint {
    /// The address is not verified: signing in by code verifies it.
    SignInByCode,
    /// The code was used up or has expired: ask for a new one.
    NewCode,
}

/// One row of the devices page.
#[derive(Debug)]
pub struct Device {
    pub id: String,
    pub device: String,
    pub os: String,
    pub ip: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub current: bool,
}

/// Values typed into the sign-up form, kept when it is shown again with an error.
#[derive(Debug, Default)]
pub struct SignUpValues<'a> {
    pub email: &'a str,
    pub username: &'a str,
    pub full_name: &'a str,
}

fn url(v: &View, path: &str) -> String {
    format!("{}/ui/{path}", v.prefix)
}

/// `path` with the return URL carried along, for links between the sign-in pages.
fn link(v: &View, path: &str) -> String {
    let mut u = url(v, path);
    if let Some(rd) = v.rd {
        u.push_str("?rd=");
        u.extend(url::form_urlencoded::byte_serialize(rd.as_bytes()));
    }
    u
}

fn layout(v: &View, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" data-prefix=(v.prefix) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                // An error in the title is what a screen reader says first on the new page.
                title { @if v.error.is_some() { "Error: " } (title) " · authgate" }
                link rel="stylesheet" href=(url(v, "style.css"));
                // Passkeys only; every other form works without it.
                script src=(url(v, "passkeys.js")) defer {}
            }
            body {
                main {
                    h1 { (title) }
                    @if let Some(e) = v.error {
                        // role=alert: screen readers announce it as the page loads.
                        div.error role="alert" id="form-error" {
                            p { (e.message) }
                            @if !e.fields.is_empty() {
                                ul {
                                    @for (name, why) in &e.fields {
                                        li { (field_label(name)) ": " (why) }
                                    }
                                }
                            }
                            @match e.hint {
                                Some(Hint::SignInByCode) => p {
                                    a href=(link(v, "code")) { "Sign in with a code sent to your email" }
                                    " — that also verifies your address."
                                },
                                Some(Hint::NewCode) => p { "Ask for a new code below." },
                                None => {},
                            }
                        }
                    }
                    @if let Some(n) = v.notice {
                        div.notice role="status" { p { (n) } }
                    }
                    (content)
                }
            }
        }
    }
}

/// The label of a field the API names in `fields`.
fn field_label(name: &str) -> &str {
    match name {
        "email" => "Email",
        "login" => "Email or username",
        "password" => "Password",
        "new_password" => "New password",
        "code" | "remove_code" => "Code",
        "current_password" => "Current password",
        "mfa_token" => "Sign-in step",
        "username" => "Username",
        "full_name" => "Full name",
        "phone" => "Phone",
        other => other,
    }
}

fn hidden(v: &View) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(v.csrf);
        @if let Some(rd) = v.rd {
            input type="hidden" name="rd" value=(rd);
        }
    }
}

/// A labelled input with its field error, linked for assistive technology.
struct Field<'a> {
    name: &'a str,
    label: &'a str,
    kind: &'a str,
    autocomplete: &'a str,
    value: &'a str,
    required: bool,
    autofocus: bool,
    extra: Option<&'a str>,
}

impl<'a> Field<'a> {
    fn new(name: &'a str, label: &'a str, kind: &'a str, autocomplete: &'a str) -> Self {
        Field {
            name,
            label,
            kind,
            autocomplete,
            value: "",
            required: true,
            autofocus: false,
            extra: None,
        }
    }
    fn value(mut self, v: &'a str) -> Self {
        self.value = v;
        self
    }
    fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    fn focus(mut self) -> Self {
        self.autofocus = true;
        self
    }
    fn help(mut self, text: &'a str) -> Self {
        self.extra = Some(text);
        self
    }

    fn render(&self, v: &View) -> Markup {
        let err = v.error.and_then(|e| e.fields.get(self.name));
        let id = format!("f-{}", self.name);
        let described = match (err.is_some(), self.extra.is_some()) {
            (true, _) => Some(format!("{id}-error")),
            (false, true) => Some(format!("{id}-help")),
            (false, false) => None,
        };
        let is_code = self.name == "code";
        // With field errors, focus goes to the (first) field in error instead.
        let autofocus = match v.error {
            Some(e) if !e.fields.is_empty() => err.is_some(),
            _ => self.autofocus,
        };
        html! {
            div.field {
                label for=(id) { (self.label) @if !self.required { " " span.optional { "(optional)" } } }
                input id=(id) name=(self.name) type=(self.kind) autocomplete=(self.autocomplete)
                    value=(self.value) required[self.required] autofocus[autofocus]
                    inputmode=[is_code.then_some("numeric")]
                    aria-invalid=[err.map(|_| "true")]
                    aria-describedby=[described.as_deref()];
                @if let Some(e) = err {
                    p.field-error id={(id) "-error"} { (e) }
                } @else if let Some(h) = self.extra {
                    p.help id={(id) "-help"} { (h) }
                }
            }
        }
    }
}

fn form(v: &View, action: &str, button: &str, fields: Markup) -> Markup {
    html! {
        form method="post" action=(url(v, action)) {
            (hidden(v))
            (fields)
            button type="submit" { (button) }
        }
    }
}

pub fn sign_in(v: &View, login: &str) -> Markup {
    let focus_password = !login.is_empty();
    // "webauthn": the browser may offer passkeys in this field's autofill.
    let login_field =
        Field::new("login", "Email or username", "text", "username webauthn").value(login);
    let password = Field::new("password", "Password", "password", "current-password");
    layout(
        v,
        "Sign in",
        html! {
            (form(v, "login", "Sign in", html! {
                (if focus_password { login_field } else { login_field.focus() }.render(v))
                (if focus_password { password.focus() } else { password }.render(v))
            }))
            button.secondary.passkey type="button" data-passkey="login" hidden { "Sign in with a passkey" }
            nav {
                p { a href=(link(v, "code")) { "Sign in with a code sent to your email" } }
                p { a href=(link(v, "forgot")) { "Forgot your password?" } }
                p { "New here? " a href=(link(v, "signup")) { "Create an account" } }
            }
        },
    )
}

pub fn code_request(v: &View, email: &str) -> Markup {
    layout(
        v,
        "Sign in with a code",
        html! {
            p { "We will email you a one-time code. A first sign-in by code also verifies your address." }
            (form(v, "code", "Send me a code", html! {
                (Field::new("email", "Email", "email", "email").value(email).focus().render(v))
            }))
            nav { p { a href=(link(v, "login")) { "Sign in with a password instead" } } }
        },
    )
}

fn code_form(v: &View, action: &str, email: &str, button: &str, more: Markup) -> Markup {
    html! {
        (form(v, action, button, html! {
            input type="hidden" name="email" value=(email);
            p.who { "Code sent to " strong { (email) } }
            (Field::new("code", "One-time code", "text", "one-time-code").focus().render(v))
            (more)
        }))
    }
}

pub fn code_enter(v: &View, email: &str) -> Markup {
    layout(
        v,
        "Enter your code",
        html! {
            (code_form(v, "code/verify", email, "Sign in", html! {}))
            nav { p { a href=(link(v, "code")) { "Send a new code" } } }
        },
    )
}

pub fn sign_up(v: &View, values: &SignUpValues) -> Markup {
    layout(
        v,
        "Create an account",
        html! {
            (form(v, "signup", "Create account", html! {
                (Field::new("email", "Email", "email", "email").value(values.email).focus().render(v))
                (Field::new("username", "Username", "text", "username").value(values.username).optional().render(v))
                (Field::new("full_name", "Full name", "text", "name").value(values.full_name).optional().render(v))
                (Field::new("password", "Password", "password", "new-password").optional()
                    .help("Leave empty to sign in with codes sent to your email.").render(v))
            }))
            nav { p { "Already have an account? " a href=(link(v, "login")) { "Sign in" } } }
        },
    )
}

pub fn verify(v: &View, email: &str) -> Markup {
    layout(
        v,
        "Verify your email",
        html! {
            (code_form(v, "verify", email, "Verify", html! {}))
            form method="post" action=(url(v, "verify/resend")) {
                (hidden(v))
                input type="hidden" name="email" value=(email);
                button.secondary type="submit" { "Send a new code" }
            }
        },
    )
}

pub fn forgot(v: &View, email: &str) -> Markup {
    layout(
        v,
        "Reset your password",
        html! {
            p { "We will email you a code to choose a new password." }
            (form(v, "forgot", "Send me a code", html! {
                (Field::new("email", "Email", "email", "email").value(email).focus().render(v))
            }))
            nav { p { a href=(link(v, "login")) { "Back to sign in" } } }
        },
    )
}

pub fn reset(v: &View, email: &str) -> Markup {
    layout(
        v,
        "Choose a new password",
        html! {
            (code_form(v, "reset", email, "Change password", html! {
                (Field::new("new_password", "New password", "password", "new-password").render(v))
            }))
            nav { p { a href=(link(v, "forgot")) { "Send a new code" } } }
        },
    )
}

pub fn devices(v: &View, email: &str, devices: &[Device]) -> Markup {
    layout(
        v,
        "Your devices",
        html! {
            p { "Signed in as " strong { (email) } "." }
            ul.devices {
                @for d in devices {
                    li {
                        p.device {
                            strong { (d.device) " · " (d.os) }
                            @if d.current { " " span.badge { "this device" } }
                        }
                        p.meta { "From " (d.ip) ", signed in " (d.created_at) ", last seen " (d.last_seen_at) }
                        form method="post" action=(url(v, "devices/revoke")) {
                            (hidden(v))
                            input type="hidden" name="session" value=(d.id);
                            // The accessible name starts with the visible text (WCAG 2.5.3).
                            @let label = if d.current { "Sign out this device" } else { "Sign out" };
                            button.secondary type="submit" aria-label={ (label) ": " (d.device) " · " (d.os) } {
                                (label)
                            }
                        }
                    }
                }
            }
            form method="post" action=(url(v, "logout")) {
                (hidden(v))
                input type="hidden" name="all" value="1";
                button.danger type="submit" { "Sign out everywhere" }
            }
            nav {
                p { a href=(link(v, "email")) { "Change your email address" } }
                p { a href=(link(v, "security")) { "Two-step verification" } }
            }
        },
    )
}

/// Email change, step 1: the new address, and the password when the account has one.
pub fn email_change(v: &View, current: &str, new_email: &str, has_password: bool) -> Markup {
    layout(
        v,
        "Change your email address",
        html! {
            p { "Your address is " strong { (current) } ". We will email a code to the new one." }
            (form(v, "email", "Send me a code", html! {
                (Field::new("email", "New email address", "email", "email").value(new_email).focus().render(v))
                @if has_password {
                    (Field::new("current_password", "Current password", "password", "current-password").render(v))
                }
            }))
            nav { p { a href=(link(v, "devices")) { "Back to your devices" } } }
        },
    )
}

/// Email change, step 2: the code sent to the new address.
pub fn email_confirm(v: &View, new_email: &str) -> Markup {
    layout(
        v,
        "Confirm your new address",
        html! {
            (code_form(v, "email/verify", new_email, "Change my address", html! {}))
            p { "Other devices will be signed out." }
            nav { p { a href=(link(v, "email")) { "Use another address" } } }
        },
    )
}

pub fn signed_out(v: &View) -> Markup {
    layout(
        v,
        "Signed out",
        html! {
            p { "You are signed out." }
            nav { p { a href=(url(v, "login")) { "Sign in again" } } }
        },
    )
}

/// A page with a message and a way back, for refusals outside any form (an expired form).
pub fn message(v: &View, title: &str, text: &str) -> Markup {
    layout(
        v,
        title,
        html! {
            p { (text) }
            nav { p { a href=(link(v, "login")) { "Back to sign in" } } }
        },
    )
}

/// The Content-Security-Policy of every page: nothing but our stylesheet, forms that post to
/// us (and redirect to the hosts a return URL may name), no framing.
pub fn content_security_policy(redirect_hosts: &[String]) -> String {
    // After a sign-in the form's 303 goes to the return URL, and Chrome holds that redirect
    // to form-action: name every scheme and port the redirect policy accepts. The host names
    // were checked when the configuration was read (letters, digits, '-', '.').
    let mut form_action = String::from("'self'");
    for h in redirect_hosts {
        let hosts = match h.strip_prefix('.') {
            Some(domain) => vec![domain.to_string(), format!("*.{domain}")],
            None => vec![h.clone()],
        };
        for host in hosts {
            form_action.push_str(&format!(" https://{host}:* http://{host}:*"));
        }
    }
    format!(
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
         img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(error: Option<&'a FormError>) -> View<'a> {
        View {
            prefix: "/auth",
            csrf: "tok",
            rd: Some("/app?x=1&y=<2>"),
            error,
            notice: None,
        }
    }

    #[test]
    fn everything_is_escaped() {
        let page = sign_in(&view(None), "\"><script>alert(1)</script>").into_string();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"));
        // The return URL travels in a hidden field and in links, escaped both times.
        assert!(
            page.contains(r#"name="rd" value="/app?x=1&amp;y=&lt;2&gt;""#),
            "{page}"
        );
        assert!(page.contains("/auth/ui/code?rd=%2Fapp%3Fx%3D1%26y%3D%3C2%3E"));
    }

    #[test]
    fn errors_are_announced_and_tied_to_their_field() {
        let e = FormError {
            message: "Check the highlighted fields.".into(),
            fields: BTreeMap::from([("email".to_string(), "not an email address".to_string())]),
            hint: None,
        };
        let page = forgot(&view(Some(&e)), "x").into_string();
        assert!(page.contains(r#"role="alert""#));
        assert!(page.contains(r#"aria-invalid="true""#));
        assert!(page.contains(r#"aria-describedby="f-email-error""#));
        assert!(page.contains(r#"<label for="f-email">"#));
        assert!(page.contains("not an email address"));
        assert!(page.contains("<title>Error: Reset your password"), "{page}");
        assert!(
            page.contains("<li>Email: not an email address</li>"),
            "{page}"
        );
        assert!(page.contains("autofocus"));
    }

    #[test]
    fn csp_names_redirect_hosts_for_form_action() {
        let csp = content_security_policy(&["app.test".into(), ".corp.test".into()]);
        assert!(
            csp.contains(
                "form-action 'self' https://app.test:* http://app.test:* https://corp.test:* \
                 http://corp.test:* https://*.corp.test:* http://*.corp.test:*;"
            ),
            "{csp}"
        );
        assert!(csp.contains("default-src 'none'"));
        // One script, our own: nothing inline, nothing from elsewhere.
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    }
}
