//! The second-factor pages: the second step of a sign-in, stepping a session up, and the
//! security page (authenticator enrolment, recovery codes). Each form calls the same service
//! entry as its JSON twin.

use super::*;
use crate::accounts::SignIn;

impl Page {
    /// A first factor's answer on a page: signed in, or the second step's form.
    pub(super) fn after_first_factor(&mut self, app: &App, outcome: &SignIn) -> Response<Body> {
        match outcome {
            SignIn::Done(signed) => self.signed_in(app, signed),
            SignIn::SecondFactor(step) => html(
                StatusCode::OK,
                ui::second_factor(
                    &self.view(None, None),
                    step.mfa_token.expose(),
                    step.methods.contains(&"passkey"),
                ),
            ),
        }
    }

    /// The second step of a sign-in.
    pub(super) async fn second_factor(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post { app, client, .. } = *post;
        let token = form.secret("mfa_token");
        let code = form.secret("code");
        let passkey = form.text("passkey") == "1";
        match app
            .accounts
            .login_second_factor(&token, &code, client)
            .await
        {
            Ok(signed) => Ok(self.signed_in(app, &signed)),
            // The step is over: back to the start, with the reason.
            Err(e @ AccountError::InvalidSecondStep) => {
                Ok(self.refused(None, e, |v| ui::sign_in(v, "")))
            }
            Err(e) => Ok(self.refused(None, e, |v| ui::second_factor(v, token.expose(), passkey))),
        }
    }

    /// The step-up page: a signed-in one-factor session shows its second factor.
    pub(super) async fn step_up_get(&self, app: &App, parts: &Parts) -> Result<Response<Body>> {
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "step-up"));
        };
        if caller.identity.two_factor {
            return Ok(self.go_back(app));
        }
        let s = app.accounts.factors_status(&caller.user_uuid).await?;
        self.render(|v| ui::step_up(v, s.totp, !s.passkeys.is_empty()))
    }

    pub(super) async fn step_up(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app, parts, client, ..
        } = *post;
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "step-up"));
        };
        let code = form.secret("code");
        let r = app
            .accounts
            .step_up(
                &caller.user_uuid,
                &caller.identity.session_id,
                &code,
                client,
            )
            .await;
        match r {
            Ok((pair, _)) => {
                let mut resp = self.go_back(app);
                app.cookies.set_tokens(resp.headers_mut(), &pair);
                self.csrf = new_token();
                self.rotate_csrf = true;
                Ok(resp)
            }
            Err(e) => {
                let s = app.accounts.factors_status(&caller.user_uuid).await?;
                Ok(self.refused(None, e, |v| ui::step_up(v, s.totp, !s.passkeys.is_empty())))
            }
        }
    }

    pub(super) async fn security_get(&self, app: &App, parts: &Parts) -> Result<Response<Body>> {
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "security"));
        };
        let user = app.accounts.profile(&caller.user_uuid).await?;
        self.render(|v| ui::security(v, &security_of(&user)))
    }

    /// The security page's forms.
    pub(super) async fn security(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app,
            parts,
            name,
            client,
            ..
        } = *post;
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "security"));
        };
        let user_id = caller.user_uuid;
        let user = app.accounts.profile(&user_id).await?;
        let again = |p: &Page, e: AccountError| {
            let s = security_of(&user);
            p.refused(None, e, |v| ui::security(v, &s))
        };
        match name {
            "security/totp" => {
                let password = form.optional("current_password").map(Secret::new);
                let r = app
                    .accounts
                    .start_totp(
                        &user_id,
                        &caller.identity.session_id,
                        password.as_ref(),
                        client,
                    )
                    .await;
                match r {
                    Ok(e) => {
                        let svg = crate::second_factor::qr_svg(e.uri.expose());
                        let r = self.render(|v| {
                            ui::totp_enrol(v, e.secret.expose(), e.uri.expose(), svg.as_deref())
                        });
                        r.map(no_store)
                    }
                    Err(e) => Ok(again(self, e)),
                }
            }
            "security/totp/confirm" => {
                let code = form.secret("code");
                let session = &caller.identity.session_id;
                match app
                    .accounts
                    .confirm_totp(&user_id, session, &code, client)
                    .await
                {
                    Ok(codes) => self.show_recovery_codes(&codes),
                    // The enrolment stays under way: start it again to see the key.
                    Err(e) => Ok(again(self, e)),
                }
            }
            "security/recovery-codes" => {
                let code = form.secret("code");
                match app
                    .accounts
                    .regenerate_recovery_codes(&user_id, &code, client)
                    .await
                {
                    Ok(codes) => self.show_recovery_codes(&codes),
                    Err(e) => Ok(again(self, e)),
                }
            }
            "security/totp/remove" => {
                let code = form.secret("remove_code");
                match app.accounts.remove_totp(&user_id, &code, client).await {
                    Ok(()) => {
                        let user = app.accounts.profile(&user_id).await?;
                        self.notice("Your authenticator was removed.", |v| {
                            ui::security(v, &security_of(&user))
                        })
                    }
                    Err(e) => Ok(again(self, e)),
                }
            }
            "security/passkeys/rename" => {
                let id = form.text("id").to_string();
                let name = form.text("name").to_string();
                match app.accounts.rename_passkey(&user_id, &id, &name).await {
                    Ok(_) => {
                        let user = app.accounts.profile(&user_id).await?;
                        self.notice("Passkey renamed.", |v| ui::security(v, &security_of(&user)))
                    }
                    Err(e) => Ok(again(self, e)),
                }
            }
            "security/passkeys/remove" => {
                let id = form.text("id").to_string();
                let session = &caller.identity.session_id;
                match app.accounts.remove_passkey(&user_id, session, &id).await {
                    Ok(()) => {
                        let user = app.accounts.profile(&user_id).await?;
                        self.notice("Passkey removed.", |v| ui::security(v, &security_of(&user)))
                    }
                    Err(e) => Ok(again(self, e)),
                }
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn show_recovery_codes(&self, codes: &[Secret]) -> Result<Response<Body>> {
        let list: Vec<&str> = codes.iter().map(Secret::expose).collect();
        self.render(|v| ui::recovery_codes(v, &list)).map(no_store)
    }
}

/// A page with a secret shown once: kept by no cache, nor by the back button.
fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn security_of(user: &crate::store::User) -> ui::Security<'_> {
    ui::Security {
        email: &user.email,
        totp: user.factors.totp.is_some(),
        recovery_codes: user.factors.recovery_codes.len(),
        has_password: user.password.is_some(),
        passkeys: user
            .factors
            .passkeys
            .iter()
            .map(|p| ui::PasskeyRow {
                id: p.id.clone(),
                name: p.name.clone(),
                created_at: when(p.created_at),
                last_used_at: p.last_used_at.map(when),
            })
            .collect(),
    }
}
