//! The sign-up pages: the account, and the address verified by its code.

use super::*;

impl Page {
    /// Sign-up: the account, and the verification code mailed.
    pub(super) async fn sign_up(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app, client, email, ..
        } = *post;
        let password = Some(form.secret("password")).filter(|p| !p.expose().is_empty());
        let username = form.optional("username");
        let full_name = form.optional("full_name");
        let reg = Registration {
            email: email.to_string(),
            password,
            username: username.clone(),
            full_name: full_name.clone(),
            phone: None,
            profile: None,
        };
        match app.accounts.register(reg, client).await {
            Ok((_, _, signup)) => {
                let mut page = self.notice(
                    "Account created. A verification code was sent to your email address.",
                    |v| ui::verify(v, email),
                )?;
                auth::set_signup_cookie(page.headers_mut(), &signup);
                Ok(page)
            }
            Err(e) => {
                let values = ui::SignUpValues {
                    email,
                    username: username.as_deref().unwrap_or(""),
                    full_name: full_name.as_deref().unwrap_or(""),
                };
                Ok(self.refused(hint(&e), e, |v| ui::sign_up(v, &values)))
            }
        }
    }

    /// The address verified by its code, and the newcomer signed in.
    pub(super) async fn verify(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app,
            parts,
            client,
            email,
            ..
        } = *post;
        let code = form.secret("code");
        let signup = auth::cookie(&parts.headers, auth::SIGNUP_COOKIE);
        // The code proved the mailbox, as a code sign-in does: signed in at once, so
        // the newcomer lands where they were going.
        let r = app
            .accounts
            .verify_email(
                email,
                code.expose().trim(),
                signup.as_ref().map(Secret::expose),
                true,
                client,
            )
            .await;
        match r.map(|v| v.signed_in) {
            Ok(Some(signed)) => {
                let mut r = self.signed_in(app, &signed);
                auth::clear_signup_cookie(r.headers_mut());
                Ok(r)
            }
            Ok(None) => self.notice("Your email address is verified.", |v| ui::sign_in(v, email)),
            Err(e) => Ok(self.refused(hint(&e), e, |v| ui::verify(v, email))),
        }
    }

    /// A new verification code.
    pub(super) async fn verify_resend(&mut self, post: &Post<'_>) -> Result<Response<Body>> {
        let r = post
            .app
            .accounts
            .resend_verification(post.email, post.client)
            .await;
        self.code_sent(r, post.email, ui::verify, ui::verify)
    }
}
