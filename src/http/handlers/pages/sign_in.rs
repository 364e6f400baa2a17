//! The sign-in pages: by password, by a mailed code, and the login page itself (which
//! refreshes a browser whose access token has expired instead of showing the form).

use super::*;

impl Page {
    /// GET of the login page. Already signed in: straight back. A valid refresh cookie (the
    /// access token expired during a browser navigation): refreshed here, then back, so the
    /// user never sees the form. Otherwise the form.
    pub(super) async fn login_get(
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

    /// Sign-in by password.
    pub(super) async fn login(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post { app, client, .. } = *post;
        let login = form.text("login").trim().to_string();
        let password = form.secret("password");
        match app.accounts.login_password(&login, &password, client).await {
            Ok(outcome) => Ok(self.after_first_factor(app, &outcome)),
            Err(e) => Ok(self.refused(hint(&e), e, |v| ui::sign_in(v, &login))),
        }
    }

    /// Sign-in by code, step 1: the code mailed.
    pub(super) async fn code(&mut self, post: &Post<'_>) -> Result<Response<Body>> {
        let r = post
            .app
            .accounts
            .start_code_login(post.email, post.client)
            .await;
        self.code_sent(r, post.email, ui::code_enter, ui::code_request)
    }

    /// Sign-in by code, step 2.
    pub(super) async fn code_verify(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app, client, email, ..
        } = *post;
        let code = form.secret("code");
        let r = app
            .accounts
            .finish_code_login(email, code.expose().trim(), client)
            .await;
        match r {
            Ok(outcome) => Ok(self.after_first_factor(app, &outcome)),
            Err(e) => Ok(self.refused(hint(&e), e, |v| ui::code_enter(v, email))),
        }
    }
}
