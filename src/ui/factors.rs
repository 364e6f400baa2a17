//! The second-factor pages: the second step of a sign-in, stepping up, and the security page
//! (authenticator enrolment with its QR code, recovery codes).

use super::{Field, View, form, hidden, layout, link, url};
use maud::{Markup, PreEscaped, html};

/// What the security page shows.
#[derive(Debug)]
pub struct Security<'a> {
    pub email: &'a str,
    pub totp: bool,
    pub recovery_codes: usize,
    pub has_password: bool,
    pub passkeys: Vec<PasskeyRow>,
}

/// One passkey on the security page.
#[derive(Debug)]
pub struct PasskeyRow {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

fn code_field<'a>() -> Field<'a> {
    Field::new("code", "Code", "text", "one-time-code")
        .focus()
        .help("The 6-digit code from your authenticator app, or one of your recovery codes.")
}

/// The second step of a sign-in: a code from the authenticator, or a recovery code.
pub fn second_factor(v: &View, mfa_token: &str, passkey: bool) -> Markup {
    layout(
        v,
        "Two-step verification",
        html! {
            p { "Your password or code was right. Now show your second factor." }
            @if passkey {
                button.passkey type="button" data-passkey="second-factor" hidden { "Use a passkey" }
            }
            (form(v, "mfa", "Continue", html! {
                input type="hidden" name="mfa_token" value=(mfa_token);
                // Only what this page shows again after a wrong code; trusted for nothing.
                @if passkey { input type="hidden" name="passkey" value="1"; }
                (code_field().render(v))
            }))
            nav { p { a href=(link(v, "login")) { "Start again" } } }
        },
    )
}

/// Stepping a signed-in session up for a place that needs two factors; or, for an account
/// without a second factor, the way to enrol one.
pub fn step_up(v: &View, totp: bool, passkey: bool) -> Markup {
    layout(
        v,
        "Confirm it is you",
        html! {
            @if totp || passkey {
                p { "This page needs a second factor." }
                @if passkey {
                    button.passkey type="button" data-passkey="step-up" hidden { "Use a passkey" }
                }
                @if totp {
                    (form(v, "step-up", "Continue", html! { (code_field().render(v)) }))
                }
            } @else {
                p { "This page needs a second factor, and your account has none yet." }
                nav { p { a href=(link(v, "security")) { "Set up an authenticator app" } } }
            }
        },
    )
}

pub fn security(v: &View, s: &Security) -> Markup {
    layout(
        v,
        "Security",
        html! {
            p { "Signed in as " strong { (s.email) } "." }
            h2 { "Authenticator app" }
            @if s.totp {
                p { "On: every sign-in asks for a code from your app." }
                p { (s.recovery_codes) " recovery codes left." }
                form method="post" action=(url(v, "security/recovery-codes")) {
                    (hidden(v))
                    (Field::new("code", "Code from your app", "text", "one-time-code").render(v))
                    button.secondary type="submit" { "Make new recovery codes" }
                }
                form method="post" action=(url(v, "security/totp/remove")) {
                    (hidden(v))
                    (Field::new("remove_code", "Code from your app or a recovery code", "text", "one-time-code").render(v))
                    button.danger type="submit" { "Remove the authenticator" }
                }
            } @else {
                p { "Off. An authenticator app (such as a password manager) adds a code to every sign-in." }
                (form(v, "security/totp", "Set up an authenticator app", html! {
                    @if s.has_password {
                        (Field::new("current_password", "Current password", "password", "current-password").render(v))
                    }
                }))
            }
            h2 { "Passkeys" }
            p { "A passkey signs you in with your device's screen lock instead of a password, and counts as two factors." }
            @if s.passkeys.is_empty() {
                p { "None yet." }
            }
            ul.devices #passkeys {
                @for p in &s.passkeys {
                    li {
                        p.device { strong { (p.name) } }
                        p.meta {
                            "Added " (p.created_at)
                            @if let Some(u) = &p.last_used_at { ", last used " (u) }
                        }
                        form method="post" action=(url(v, "security/passkeys/rename")) {
                            (hidden(v))
                            input type="hidden" name="id" value=(p.id);
                            div.field {
                                label for={"rename-" (p.id)} { "New name" }
                                input id={"rename-" (p.id)} name="name" type="text" value=(p.name) required;
                            }
                            button.secondary type="submit" aria-label={"Rename: " (p.name)} { "Rename" }
                        }
                        form method="post" action=(url(v, "security/passkeys/remove")) {
                            (hidden(v))
                            input type="hidden" name="id" value=(p.id);
                            button.secondary type="submit" aria-label={"Remove: " (p.name)} { "Remove" }
                        }
                    }
                }
            }
            div data-passkey="panel" hidden {
                div.field {
                    label for="passkey-name" { "Name for a new passkey" }
                    input #passkey-name type="text" value="Passkey" maxlength="64";
                }
                @if s.has_password {
                    div.field {
                        label for="passkey-password" { "Current password" }
                        input #passkey-password type="password" autocomplete="current-password";
                    }
                }
                button type="button" data-passkey="add" { "Add a passkey" }
            }
            nav {
                p { a href=(link(v, "devices")) { "Your devices" } }
            }
        },
    )
}

/// Enrolment: the QR code and the secret, shown once, and the first code to confirm.
pub fn totp_enrol(v: &View, secret: &str, uri: &str, qr_svg: Option<&str>) -> Markup {
    layout(
        v,
        "Set up your authenticator",
        html! {
            p { "Scan this code with your authenticator app, or type the key into it." }
            @if let Some(svg) = qr_svg {
                // Drawn here from the otpauth URI (rectangles only): nothing is loaded.
                div.qr role="img" aria-label="QR code of your authenticator key" { (PreEscaped(svg)) }
            }
            p { "Key: " code #totp-secret { (secret) } }
            details { summary { "Setup link" } p { code #totp-uri { (uri) } } }
            (form(v, "security/totp/confirm", "Turn it on", html! {
                (Field::new("code", "Code from your app", "text", "one-time-code").focus().render(v))
            }))
        },
    )
}

/// Recovery codes, shown once.
pub fn recovery_codes(v: &View, codes: &[&str]) -> Markup {
    layout(
        v,
        "Your recovery codes",
        html! {
            p { "Each code signs you in once when your authenticator is not at hand. Keep them somewhere safe: they are not shown again." }
            ul.recovery-codes #recovery-codes {
                @for c in codes { li { code { (c) } } }
            }
            nav { p { a href=(link(v, "security")) { "Done" } } }
        },
    )
}
