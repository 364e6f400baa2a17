//! The password reset pages.

use super::*;

impl Page {
    /// A reset code mailed.
    pub(super) async fn forgot(&mut self, post: &Post<'_>) -> Result<Response<Body>> {
        let r = post
            .app
            .accounts
            .forgot_password(post.email, post.client)
            .await;
        self.code_sent(r, post.email, ui::reset, ui::forgot)
    }

    /// The password reset by the mailed code.
    pub(super) async fn reset(
        &mut self,
        post: &Post<'_>,
        form: &mut Form,
    ) -> Result<Response<Body>> {
        let Post {
            app, client, email, ..
        } = *post;
        let code = form.secret("code");
        let new_password = form.secret("new_password");
        let r = app
            .accounts
            .reset_password(email, code.expose().trim(), &new_password, client)
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
            Err(e) => Ok(self.refused(hint(&e), e, |v| ui::reset(v, email))),
        }
    }
}
