//! The signed-in pages: the devices list, email change, and sign-out.

use super::*;

impl Page {
    pub(super) async fn devices(&self, app: &App, parts: &Parts) -> Result<Response<Body>> {
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

    pub(super) async fn email_get(&self, app: &App, parts: &Parts) -> Result<Response<Body>> {
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "email"));
        };
        let user = app.accounts.profile(&caller.user_uuid).await?;
        self.render(|v| ui::email_change(v, &user.email, "", user.password.is_some()))
    }

    /// Email change: the code mailed to the new address, then that code.
    pub(super) async fn email(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app,
            parts,
            name,
            client,
            email,
            ..
        } = *post;
        let Some(caller) = signed_in_caller(app, &parts.headers).await else {
            return Ok(self.sign_in_first(app, "email"));
        };
        let user_id = caller.user_uuid;
        if name == "email" {
            let password = form.optional("current_password").map(Secret::new);
            let session = &caller.identity.session_id;
            let r = app
                .accounts
                .start_email_change(&user_id, session, email, password.as_ref(), client)
                .await;
            return match r {
                Ok(_) => self.notice("A code has been sent to the new address.", |v| {
                    ui::email_confirm(v, email)
                }),
                Err(e) => {
                    let user = app.accounts.profile(&user_id).await?;
                    let has_password = user.password.is_some();
                    Ok(self.refused(None, e, |v| {
                        ui::email_change(v, &user.email, email, has_password)
                    }))
                }
            };
        }
        let code = form.text("code").to_string();
        let r = app
            .accounts
            .finish_email_change(&user_id, &caller.identity.session_id, email, &code, client)
            .await;
        match r {
            // Every session ended with the old address in its tokens: a new one here.
            Ok(signed) => Ok(self.signed_in_to(&signed, see_other(&self.page_url("devices")), app)),
            Err(e) => {
                // The hint for a taken address is about signing up, not this page.
                let h = hint(&e).filter(|h| matches!(h, Hint::NewCode));
                Ok(self.refused(h, e, |v| ui::email_confirm(v, email)))
            }
        }
    }

    /// Sign-out of this device, of every device, or of one listed on the devices page.
    pub(super) async fn sign_out(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app, parts, name, ..
        } = *post;
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
}
