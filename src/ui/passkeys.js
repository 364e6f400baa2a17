// authgate's one script: passkeys on the hosted pages. Every other form works without it;
// without it (or without WebAuthn's JSON methods) the passkey controls stay hidden.
"use strict";
(function () {
  const PKC = window.PublicKeyCredential;
  if (!PKC || !PKC.parseCreationOptionsFromJSON || !PKC.parseRequestOptionsFromJSON) {
    return;
  }
  const prefix = document.documentElement.dataset.prefix || "/auth";
  const rdInput = document.querySelector('input[name="rd"]');
  const back = () => location.assign(rdInput && rdInput.value ? rdInput.value : "/");

  async function post(path, body) {
    const r = await fetch(prefix + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    let json = {};
    try {
      json = await r.json();
    } catch (_) {
      // an answer that is not JSON says nothing more than its status
    }
    return { ok: r.ok, body: json };
  }

  // Errors go where the page shows its own (announced to screen readers).
  function say(text) {
    let box = document.getElementById("passkey-error");
    if (!box) {
      box = document.createElement("div");
      box.id = "passkey-error";
      box.className = "error";
      box.setAttribute("role", "alert");
      const h1 = document.querySelector("main h1");
      h1.after(box);
    }
    box.textContent = text;
  }

  const failed = (r) => say((r.body && r.body.message) || "That did not work; try again.");

  async function get(options, mediation, signal) {
    const publicKey = PKC.parseRequestOptionsFromJSON(options);
    const cred = await navigator.credentials.get({ publicKey, mediation, signal });
    return cred.toJSON();
  }

  // A ceremony that the person started (a button): their cancelling is no error to report
  // loudly, anything else is.
  function quietly(e) {
    if (e && e.name !== "AbortError" && e.name !== "NotAllowedError") {
      say("Your device could not use a passkey here (" + e.name + ").");
    }
  }

  for (const el of document.querySelectorAll("[data-passkey]")) {
    el.hidden = false;
  }

  // The login page: autofill in the username field, and a button.
  const loginButton = document.querySelector('button[data-passkey="login"]');
  if (loginButton) {
    let pending = null;
    const signIn = async (mediation) => {
      if (pending) pending.abort();
      pending = new AbortController();
      const o = await post("/login/passkey/options", {});
      if (!o.ok) return failed(o);
      try {
        const credential = await get(o.body.data.publicKey, mediation, pending.signal);
        const r = await post("/login/passkey", { challenge_id: o.body.data.challenge_id, credential });
        return r.ok ? back() : failed(r);
      } catch (e) {
        if (mediation !== "conditional") quietly(e);
      }
    };
    loginButton.addEventListener("click", () => signIn(undefined));
    if (PKC.isConditionalMediationAvailable) {
      PKC.isConditionalMediationAvailable().then((yes) => yes && signIn("conditional"));
    }
  }

  // The second step of a sign-in.
  const secondButton = document.querySelector('button[data-passkey="second-factor"]');
  if (secondButton) {
    secondButton.addEventListener("click", async () => {
      const mfa_token = document.querySelector('input[name="mfa_token"]').value;
      const o = await post("/login/mfa/passkey/options", { mfa_token });
      if (!o.ok) return failed(o);
      try {
        const credential = await get(o.body.data.publicKey, undefined);
        const r = await post("/login/mfa/passkey", {
          mfa_token,
          challenge_id: o.body.data.challenge_id,
          credential,
        });
        return r.ok ? back() : failed(r);
      } catch (e) {
        quietly(e);
      }
    });
  }

  // Stepping a signed-in session up.
  const stepButton = document.querySelector('button[data-passkey="step-up"]');
  if (stepButton) {
    stepButton.addEventListener("click", async () => {
      const o = await post("/login/passkey/options", {});
      if (!o.ok) return failed(o);
      try {
        const credential = await get(o.body.data.publicKey, undefined);
        const r = await post("/mfa/verify", { challenge_id: o.body.data.challenge_id, credential });
        return r.ok ? back() : failed(r);
      } catch (e) {
        quietly(e);
      }
    });
  }

  // The security page: adding a passkey.
  const addButton = document.querySelector('button[data-passkey="add"]');
  if (addButton) {
    addButton.addEventListener("click", async () => {
      const input = document.getElementById("passkey-name");
      const name = input ? input.value : "";
      const password = document.getElementById("passkey-password");
      const body = { name };
      if (password) body.current_password = password.value;
      const o = await post("/passkeys/register/options", body);
      if (!o.ok) return failed(o);
      try {
        const publicKey = PKC.parseCreationOptionsFromJSON(o.body.data.publicKey);
        const cred = await navigator.credentials.create({ publicKey });
        const r = await post("/passkeys/register", {
          challenge_id: o.body.data.challenge_id,
          credential: cred.toJSON(),
          name,
        });
        return r.ok ? location.reload() : failed(r);
      } catch (e) {
        quietly(e);
      }
    });
  }
})();
