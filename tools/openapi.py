#!/usr/bin/env python3
"""Writes src/http/openapi.json, the OpenAPI 3.1 document of every operation authgate answers.

Edit this file, run `python3 tools/openapi.py` from the repository root, and commit both: the
test `openapi::the_openapi_document_names_every_operation_and_each_is_answered` holds the
document to the router's table (src/http/operations.rs), and `.ci/schemathesis` holds the
real binary to the document.
"""
import os
import json, copy

PREFIX = "/auth"
J = "application/json"
HTML = "text/html; charset=utf-8"
FORM = "application/x-www-form-urlencoded"

def ref(name): return {"$ref": f"#/components/schemas/{name}"}
def href(name): return {"$ref": f"#/components/headers/{name}"}
def pref(name): return {"$ref": f"#/components/parameters/{name}"}
responses_c = {}
params_c = {}
def rc(name, r):
  responses_c[name] = r
  return {"$ref": f"#/components/responses/{name}"}
def pc(p, name=None):
  name = name or p["name"].replace("__", "").replace("-", "")
  params_c[name] = p
  return {"$ref": f"#/components/parameters/{name}"}

NULLSTR = {"type": ["string", "null"]}
DT = {"type": "string", "format": "date-time"}

schemas = {
  "ErrorEnvelope": {
    "type": "object",
    "description": "Every error answer of the gateway's own JSON endpoints (src/http/error.rs `ApiError::into_response`). `fields` is present only on validation errors (and ALREADY_EXISTS, which names the taken field); it is never null. Retry times are given in the `Retry-After` header, not in the body.",
    "required": ["status", "code", "message"],
    "additionalProperties": False,
    "properties": {
      "status": {"type": "string", "const": "error"},
      "code": {"type": "string", "description": "Stable, machine-readable error code (see each response's description for the codes an endpoint answers)."},
      "message": {"type": "string", "description": "A human sentence; never internal detail."},
      "fields": {"type": "object", "description": "Per-field messages: field name (or JSON path of a type error) to message.", "additionalProperties": {"type": "string"}},
    },
  },
  "User": {
    "type": "object",
    "description": "The user object: never a password, hash or code.",
    "required": ["id", "email", "email_verified", "username", "full_name", "phone", "roles", "profile", "created_at"],
    "additionalProperties": False,
    "properties": {
      "id": {"type": "string", "format": "uuid"},
      "email": {"type": "string", "description": "Normalized (trimmed, lower-case)."},
      "email_verified": {"type": "boolean"},
      "username": {"type": ["string", "null"], "description": "Normalized (lower-case)."},
      "full_name": {"type": ["string", "null"]},
      "phone": {"type": ["string", "null"], "description": "E.164."},
      "roles": {"type": "array", "items": {"type": "string"}},
      "profile": {"type": "object", "description": "Free-form JSON object given at registration or by PATCH /auth/me."},
      "created_at": DT,
    },
  },
  "Session": {
    "type": "object",
    "description": "A signed-in device.",
    "required": ["id", "created_at", "last_seen_at", "expires_at", "ip", "user_agent", "device", "os", "current"],
    "additionalProperties": False,
    "properties": {
      "id": {"type": "string"},
      "created_at": DT,
      "last_seen_at": DT,
      "expires_at": {"type": "string", "format": "date-time", "description": "Absolute end of the session, whatever its activity."},
      "ip": {"type": "string"},
      "user_agent": {"type": "string"},
      "device": {"type": "string", "description": "Device family read from the User-Agent."},
      "os": {"type": "string", "description": "Operating system read from the User-Agent."},
      "current": {"type": "boolean", "description": "Whether this is the caller's own session (always false in the admin listing)."},
    },
  },
  "TokenPair": {
    "type": "object",
    "description": "The answer to a sign-in, a refresh or an email change: the tokens in the body (also set as cookies).",
    "required": ["access_token", "refresh_token", "token_type", "expires_in", "refresh_expires_in", "session_id", "user"],
    "additionalProperties": False,
    "properties": {
      "access_token": {"type": "string", "description": "JWT access token (EdDSA by default, ES256 or HS256)."},
      "refresh_token": {"type": "string", "description": "Opaque refresh token (`rt2.<session id>.<random>.<mac>`); single use, rotated on refresh."},
      "token_type": {"type": "string", "const": "Bearer"},
      "expires_in": {"type": "integer", "minimum": 0, "description": "Seconds the access token lives."},
      "refresh_expires_in": {"type": "integer", "minimum": 0, "description": "Seconds the refresh token lives."},
      "session_id": {"type": "string"},
      "user": ref("User"),
      "device_token": {"type": "string", "description": "After a sign-in (password, code, email change; not a refresh): the device token, also set as the `__Host-authgate-device` cookie. Present it (cookie or `device_token` field) to keep this device's own failure budget."},
    },
  },
  "Jwk": {
    "type": "object",
    "description": "A public signing key (RFC 7517). EdDSA: kty OKP, crv Ed25519, x. ES256: kty EC, crv P-256, x, y.",
    "required": ["kty", "kid", "alg", "use"],
    "properties": {
      "kty": {"type": "string", "enum": ["OKP", "EC"]},
      "crv": {"type": "string", "enum": ["Ed25519", "P-256"]},
      "x": {"type": "string"},
      "y": {"type": "string"},
      "kid": {"type": "string"},
      "alg": {"type": "string", "enum": ["EdDSA", "ES256"]},
      "use": {"type": "string", "const": "sig"},
    },
  },
  "Jwks": {
    "type": "object",
    "description": "The JWK set (not wrapped in the envelope). Empty `keys` with HS256, whose key is secret.",
    "required": ["keys"],
    "additionalProperties": False,
    "properties": {"keys": {"type": "array", "items": ref("Jwk")}},
  },
  "OtpSent": {
    "type": "object", "required": ["otp_expires_at"], "additionalProperties": False,
    "properties": {"otp_expires_at": {"type": "string", "format": "date-time", "description": "When the code mailed (or, for an unknown address, pretended mailed) expires."}},
  },
  "Revoked": {
    "type": "object", "required": ["revoked"], "additionalProperties": False,
    "properties": {"revoked": {"type": "integer", "minimum": 0, "description": "How many sessions were ended."}},
  },
  "Empty": {"type": "object", "additionalProperties": False, "maxProperties": 0},
  "Registered": {
    "type": "object", "required": ["user", "otp_expires_at", "signup_token"], "additionalProperties": False,
    "properties": {
      "user": ref("User"),
      "otp_expires_at": DT,
      "signup_token": {"type": "string", "description": "Also the `__Host-authgate-signup` cookie. Present it at POST /auth/verify to keep the password chosen here."},
    },
  },
  "Verified": {
    "type": "object", "required": ["user"], "additionalProperties": False,
    "properties": {
      "user": ref("User"),
      "password_removed": {"type": "boolean", "const": True, "description": "Present when the password chosen at registration was dropped (the verifying client did not present the sign-up token)."},
      "reset_token": {"type": "string", "description": "With `password_removed`: a reset token (`prt1.`...) to choose a password with POST /auth/password/reset and `Authorization: Bearer`."},
      "reset_token_expires_at": DT,
      "access_token": {"type": "string", "description": "With `sign_in`: as in TokenPair."},
      "refresh_token": {"type": "string", "description": "With `sign_in`: as in TokenPair."},
      "token_type": {"type": "string", "const": "Bearer"},
      "expires_in": {"type": "integer", "minimum": 0},
      "refresh_expires_in": {"type": "integer", "minimum": 0},
      "session_id": {"type": "string"},
      "device_token": {"type": "string", "description": "With `sign_in`: as in TokenPair."},
    },
  },
  "ResetToken": {
    "type": "object", "required": ["reset_token", "expires_at"], "additionalProperties": False,
    "properties": {
      "reset_token": {"type": "string", "description": "Short-lived, single-use reset token (`prt1.`...). Send it as `Authorization: Bearer` to POST /auth/password/reset."},
      "expires_at": DT,
    },
  },
  "AdminUser": {
    "description": "The user as an admin sees it: the profile plus account state.",
    "type": "object",
    "required": ["id", "email", "email_verified", "username", "full_name", "phone", "roles", "profile", "created_at", "blocked", "locked_until", "has_password", "mfa"],
    "additionalProperties": False,
    "properties": {},
  },
  "AdminUserList": {
    "type": "object", "required": ["users", "offset", "limit"], "additionalProperties": False,
    "properties": {
      "users": {"type": "array", "items": ref("AdminUser")},
      "offset": {"type": "integer", "minimum": 0},
      "limit": {"type": "integer", "minimum": 1, "maximum": 500},
    },
  },
  "Allowed": {
    "type": "object",
    "description": "The identity the forward-auth door admitted. Empty (`{}`) on a public route for a caller without valid credentials.",
    "additionalProperties": False,
    "properties": {
      "id": {"type": "string", "description": "User id."},
      "email": {"type": "string"},
      "username": {"type": ["string", "null"]},
      "roles": {"type": "array", "items": {"type": "string"}, "description": "The roles that count for this session (those of `mfa.required_roles` only in a two-factor session)."},
      "session_id": {"type": "string"},
      "amr": {"type": "array", "items": {"type": "string"}, "description": "How the session was proved (RFC 8176: `pwd`, `otp`, `mfa`); empty for sessions made before this was kept."},
      "aal": {"type": "integer", "enum": [1, 2], "description": "2 for a two-factor session, else 1."},
    },
    "dependentRequired": {"id": ["email", "username", "roles", "session_id", "amr", "aal"]},
  },
  "SecondStep": {
    "type": "object", "required": ["mfa_required", "mfa_token", "methods", "expires_in"], "additionalProperties": False,
    "description": "A right first factor on an account with a second factor: no tokens yet; POST /auth/login/mfa with the `mfa_token` and a code.",
    "properties": {
      "mfa_required": {"type": "boolean", "const": True},
      "mfa_token": {"type": "string", "description": "`mfa1.<account>.<random>`: single use, lives `mfa.token_ttl`, dies after `otp.max_attempts` wrong codes; good for /auth/login/mfa only."},
      "methods": {"type": "array", "items": {"type": "string", "enum": ["totp", "recovery_code", "passkey"]}},
      "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds the `mfa_token` lives."},
    },
  },
  "FactorsStatus": {
    "type": "object", "required": ["totp", "recovery_codes", "passkeys"], "additionalProperties": False,
    "properties": {
      "totp": {"type": "object", "required": ["enabled", "pending"], "additionalProperties": False, "properties": {
        "enabled": {"type": "boolean", "description": "An authenticator is confirmed: every sign-in asks for a code."},
        "pending": {"type": "boolean", "description": "An enrolment was started and not confirmed."}}},
      "recovery_codes": {"type": "object", "required": ["remaining"], "additionalProperties": False, "properties": {"remaining": {"type": "integer", "minimum": 0}}},
      "passkeys": {"type": "array", "items": ref("Passkey")},
    },
  },
  "TotpEnrolment": {
    "type": "object", "required": ["secret", "otpauth_uri"], "additionalProperties": False,
    "properties": {
      "secret": {"type": "string", "description": "The shared secret, RFC 4648 base32 without padding (SHA-1, 6 digits, 30 s). Shown once."},
      "otpauth_uri": {"type": "string", "description": "`otpauth://totp/<issuer>:<email>?secret=...&issuer=...`, for a QR code."},
    },
  },
  "RecoveryCodes": {
    "type": "object", "required": ["recovery_codes"], "additionalProperties": False,
    "properties": {"recovery_codes": {"type": "array", "minItems": 10, "maxItems": 10, "items": {"type": "string", "description": "`xxxxx-xxxxx` (Crockford base32); single use; shown once."}}},
  },
  "Passkey": {
    "type": "object", "required": ["id", "name", "created_at", "last_used_at"], "additionalProperties": False,
    "properties": {
      "id": {"type": "string", "description": "The credential id, base64url."},
      "name": {"type": "string"},
      "created_at": DT,
      "last_used_at": {"type": ["string", "null"], "format": "date-time"},
    },
  },
  "Ceremony": {
    "type": "object", "required": ["challenge_id", "publicKey"], "additionalProperties": False,
    "description": "A WebAuthn ceremony: options for navigator.credentials (`PublicKeyCredential.parseCreationOptionsFromJSON` / `parseRequestOptionsFromJSON` take `publicKey` as is), and the id to send back with the answer. Single use; five minutes.",
    "properties": {
      "challenge_id": {"type": "string"},
      "publicKey": {"type": "object", "description": "`PublicKeyCredentialCreationOptionsJSON` or `PublicKeyCredentialRequestOptionsJSON` (WebAuthn Level 3)."},
    },
  },
  "Readiness": {
    "type": "object", "required": ["routes"], "additionalProperties": False,
    "properties": {"routes": {"type": "integer", "minimum": 0, "description": "Number of configured upstream routes."}},
  },
}
# AdminUser = User + 3 fields
au = schemas["AdminUser"]
au["properties"] = copy.deepcopy(schemas["User"]["properties"])
au["properties"].update({
  "blocked": {"type": "boolean", "description": "Blocked by an administrator until unblocked."},
  "locked_until": {"type": ["string", "null"], "format": "date-time", "description": "End of a temporary lockout after repeated password failures."},
  "has_password": {"type": "boolean"},
  "mfa": {"type": "object", "required": ["totp", "recovery_codes"], "additionalProperties": False, "properties": {
    "totp": {"type": "boolean"}, "recovery_codes": {"type": "integer", "minimum": 0}}},
})

def success_env(name, data_schema, msg_desc=None):
  schemas[name] = {
    "type": "object",
    "description": "The success envelope (src/http/error.rs `success`).",
    "required": ["status", "message", "data"],
    "additionalProperties": False,
    "properties": {
      "status": {"type": "string", "const": "success"},
      "message": {"type": "string", "description": msg_desc or "A human sentence."},
      "data": data_schema,
    },
  }
  return ref(name)

ENV = {
 "UserEnvelope": success_env("UserEnvelope", ref("User")),
 "AdminUserEnvelope": success_env("AdminUserEnvelope", ref("AdminUser")),
 "AdminUserListEnvelope": success_env("AdminUserListEnvelope", ref("AdminUserList")),
 "SessionListEnvelope": success_env("SessionListEnvelope", {"type": "array", "items": ref("Session")}),
 "TokenPairEnvelope": success_env("TokenPairEnvelope", ref("TokenPair")),
 "SignInEnvelope": success_env("SignInEnvelope", {"oneOf": [ref("TokenPair"), ref("SecondStep")]}),
 "FactorsEnvelope": success_env("FactorsEnvelope", ref("FactorsStatus")),
 "TotpEnrolmentEnvelope": success_env("TotpEnrolmentEnvelope", ref("TotpEnrolment")),
 "RecoveryCodesEnvelope": success_env("RecoveryCodesEnvelope", ref("RecoveryCodes")),
 "PasskeyEnvelope": success_env("PasskeyEnvelope", ref("Passkey")),
 "PasskeyListEnvelope": success_env("PasskeyListEnvelope", {"type": "array", "items": ref("Passkey")}),
 "CeremonyEnvelope": success_env("CeremonyEnvelope", ref("Ceremony")),
 "OtpSentEnvelope": success_env("OtpSentEnvelope", ref("OtpSent")),
 "RevokedEnvelope": success_env("RevokedEnvelope", ref("Revoked")),
 "EmptyEnvelope": success_env("EmptyEnvelope", ref("Empty")),
 "RegisteredEnvelope": success_env("RegisteredEnvelope", ref("Registered")),
 "VerifiedEnvelope": success_env("VerifiedEnvelope", ref("Verified")),
 "ResetTokenEnvelope": success_env("ResetTokenEnvelope", ref("ResetToken")),
 "AllowedEnvelope": success_env("AllowedEnvelope", ref("Allowed"), "`Allowed.`"),
 "HealthEnvelope": success_env("HealthEnvelope", ref("Empty"), "`alive`"),
 "ReadinessEnvelope": success_env("ReadinessEnvelope", ref("Readiness"), "`ready`"),
}

schemas["HtmlPage"] = {"type": "string", "description": "An HTML page rendered by the gateway (no JavaScript needed): a form, a notice, or the form again with the API's error message and field errors."}

headers = {
  "Retry-After": {"description": "Seconds to wait before trying again (at least 1).", "schema": {"type": "integer", "minimum": 1}},
  "RateLimit-Limit": {"description": "On 429 RATE_LIMITED only: the limit that refused.", "schema": {"type": "integer"}},
  "RateLimit-Remaining": {"description": "On 429 RATE_LIMITED only: always 0.", "schema": {"type": "integer"}},
  "RateLimit-Reset": {"description": "On 429 RATE_LIMITED only: seconds until the limit admits again (equals Retry-After).", "schema": {"type": "integer"}},
  "Location": {"description": "Where to go next.", "schema": {"type": "string"}},
  "X-Request-Id": {"description": "The request's id (a trusted proxy's own id is kept), on every answer.", "schema": {"type": "string"}},
  "Set-Cookie-Tokens": {
    "description": "Sets the token cookies (HttpOnly, Secure, SameSite=Lax): `__Host-authgate-access` (the access token, Path=/, Max-Age = expires_in; named `__Secure-authgate-access` with a Domain when `server.cookie_domain` is set), `__Secure-authgate-refresh` (the refresh token, Path = the auth prefix), `__Host-authgate-session` (the session id the refresh cookie must belong to, Path=/), and clears a legacy `__Secure-authgate-refresh` at Path=/auth/token/refresh. After a sign-in (not a refresh) also `__Host-authgate-device` (the device token, Path=/, 400 days).",
    "schema": {"type": "string"},
  },
  "Set-Cookie-Clear": {
    "description": "When the caller's own session was ended: clears `__Host-authgate-access` (and `__Secure-authgate-access` with `server.cookie_domain`), `__Secure-authgate-refresh` and `__Host-authgate-session` (Max-Age=0).",
    "schema": {"type": "string"},
  },
  "Set-Cookie-Signup": {"description": "Sets `__Host-authgate-signup` (the sign-up token; HttpOnly, Secure, SameSite=Lax, Path=/, 7 days).", "schema": {"type": "string"}},
  "Set-Cookie-Signup-Clear": {"description": "Clears `__Host-authgate-signup` (Max-Age=0); with `sign_in`, also the token cookies and `__Host-authgate-device` as after a sign-in.", "schema": {"type": "string"}},
  "Set-Cookie-Page": {
    "description": "Hosted pages: `__Host-authgate-csrf` (the double-submit CSRF token; HttpOnly, Secure, SameSite=Lax, Path=/) on an HTML page when the browser had none, and a new one after a sign-in; after a sign-in also the token cookies (`__Host-authgate-access`, `__Secure-authgate-refresh`, `__Host-authgate-session`) and `__Host-authgate-device`; after sign-up `__Host-authgate-signup` (cleared again by a successful verify); after a sign-out or password reset the token cookies are cleared.",
    "schema": {"type": "string"},
  },
  "Content-Security-Policy": {"description": "On every HTML page.", "schema": {"type": "string"}},
  "X-Auth-User-Id": {"description": "Identity header (name configurable): the user id. Only when a signed-in caller is admitted.", "schema": {"type": "string"}},
  "X-Auth-User-Email": {"description": "Identity header (name configurable): the email address.", "schema": {"type": "string"}},
  "X-Auth-User-Name": {"description": "Identity header (name configurable): the username, or the email for accounts without one.", "schema": {"type": "string"}},
  "X-Auth-User-Roles": {"description": "Identity header (name configurable): the roles, comma-separated.", "schema": {"type": "string"}},
  "X-Auth-Session-Id": {"description": "Identity header (name configurable): the session id.", "schema": {"type": "string"}},
}

def jerr(desc, extra_headers=None):
  r = {"description": desc, "content": {J: {"schema": ref("ErrorEnvelope")}}}
  if extra_headers:
    r["headers"] = {h: href(h) for h in extra_headers}
  return r

def html_resp(desc, extra_headers=None, also_json=False):
  c = {HTML: {"schema": ref("HtmlPage")}}
  if also_json:
    c[J] = {"schema": ref("ErrorEnvelope")}
  h = {"Content-Security-Policy": href("Content-Security-Policy"), "Set-Cookie": href("Set-Cookie-Page")}
  for x in (extra_headers or []):
    h[x] = href(x)
  return {"description": desc, "content": c, "headers": h}

PRE_400 = "INVALID_REQUEST: checked before routing (a method with a lower-case letter, a Host that is not a host name with an optional numeric port, a path the normalizer refuses: bad or encoded separators, '..' above the root, ';' parameters, control characters, double encoding)"
E431_R = jerr("HEADERS_TOO_LARGE: too many request headers (`server.max_headers`) or too many header bytes (`server.max_header_bytes`); checked before routing.")
E404 = "NOT_FOUND: nothing is served at this address (e.g. a path that normalizes elsewhere)."
E405 = "METHOD_NOT_ALLOWED: the path exists with another method (no `Allow` header is sent)."
E408_R = jerr("REQUEST_TIMEOUT: the body did not arrive within `accounts.body_timeout`.")
E413_R = jerr("PAYLOAD_TOO_LARGE: the body is larger than `accounts.max_body_bytes` (default 65536).")
E415_R = jerr("UNSUPPORTED_MEDIA_TYPE: a body that is not `application/json` (or `application/*+json`).")
E500_R = jerr("INTERNAL: the store failed (never with internal detail).")
E503_R = jerr("SERVICE_BUSY: every password-hashing thread is taken; try again after Retry-After (1 second).", ["Retry-After"])

E431 = rc("HeadersTooLarge", E431_R)
E408 = rc("RequestTimeout", E408_R)
E413 = rc("PayloadTooLarge", E413_R)
E415 = rc("UnsupportedMediaType", E415_R)
E500 = rc("Internal", E500_R)
E503 = rc("ServiceBusy", E503_R)

def e429(codes):
  return jerr("Too many requests, with `Retry-After`. " + codes + " RATE_LIMITED also carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.",
              ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"])

E400_PRE_J = rc("PreRoutingBadRequest", jerr(PRE_400 + "."))
E404_R = rc("NotFound", jerr(E404))
E405_R = rc("MethodNotAllowed", jerr("METHOD_NOT_ALLOWED: the path (here: a path parameter that normalizes to another operation's path, such as `.`) is an operation's with other methods (no `Allow` header is sent)."))
def common(body=False, extra400=None, m405=False):
  r = {}
  d400 = PRE_400
  if body:
    d400 += "; the body is not valid JSON, nests deeper than 32 levels, has trailing data or the wrong shape, or a field has the wrong type or is missing (`fields` names it, e.g. `{\"email\": \"is required\"}`). An empty body is parsed as JSON (and refused) unless the endpoint takes an empty body"
  if extra400:
    d400 += "; " + extra400
  r["400"] = jerr(d400 + ".") if (body or extra400) else E400_PRE_J
  r["404"] = E404_R
  if m405:
    r["405"] = E405_R
  if body:
    r["408"] = E408; r["413"] = E413; r["415"] = E415
  r["431"] = E431
  return r

AUTH_401 = "UNAUTHENTICATED (no valid access token naming a live session), TOKEN_EXPIRED (the access token is only too old: refresh it)"
CSRF_403 = "FORBIDDEN: a cookie-authenticated state change from another origin (`Sec-Fetch-Site` not same-origin/none, or no matching `Origin`)"
SEC_REQ = [{"bearerAuth": []}, {"cookieAuth": []}]

DEVICE_COOKIE = {"name": "__Host-authgate-device", "in": "cookie", "required": False, "description": "The device token from an earlier sign-in (used when the body has no `device_token`).", "schema": {"type": "string"}}

paths = {}
def op(path, method, o):
  paths.setdefault(path, {})[method] = o

def json_body(schema_name, required=True, desc=None):
  b = {"required": required, "content": {J: {"schema": ref(schema_name)}}}
  if desc: b["description"] = desc
  return b

def sec_str(desc, fmt=None):
  s = {"type": "string", "description": desc}
  if fmt: s["format"] = fmt
  return s
def nsec_str(desc, fmt=None):
  s = {"type": ["string", "null"], "description": desc}
  if fmt: s["format"] = fmt
  return s

# ---------- request body schemas ----------
NOTE_UNKNOWN = " Unknown fields are ignored (no struct refuses them; `parse` in src/http/json.rs does not either). A field given as null counts as absent."
schemas["RegisterRequest"] = {
  "type": "object", "required": ["email"],
  "description": "RegisterBody." + NOTE_UNKNOWN,
  "properties": {
    "email": {"type": "string", "description": "Normalized (trimmed, lower-case) and validated."},
    "password": nsec_str("Optional when `accounts.allow_passwordless` (the default); checked against the password policy.", "password"),
    "username": nsec_str("Optional, unique."),
    "full_name": nsec_str("Optional."),
    "phone": nsec_str("Optional, E.164, unique."),
    "profile": {"type": ["object", "null"], "description": "Optional free-form JSON object (at most `accounts.profile_max_bytes` as JSON)."},
  },
}
schemas["VerifyRequest"] = {
  "type": "object", "required": ["email", "code"], "description": "VerifyBody." + NOTE_UNKNOWN,
  "properties": {
    "email": {"type": "string"},
    "code": sec_str("The code mailed at registration (or resent): `otp.length` digits (6 by default)."),
    "signup_token": nsec_str("From the registration (else the `__Host-authgate-signup` cookie): keeps the password chosen at registration."),
    "device_token": nsec_str("From an earlier sign-in (else the `__Host-authgate-device` cookie)."),
    "sign_in": {"type": "boolean", "default": False, "description": "Sign in once verified: the answer then carries the token pair and the device token, as after /auth/login (the hosted sign-up page always does)."},
  },
}
schemas["EmailRequest"] = {
  "type": "object", "required": ["email"], "description": "EmailOnly." + NOTE_UNKNOWN,
  "properties": {
    "email": {"type": "string"},
    "device_token": nsec_str("From an earlier sign-in (else the `__Host-authgate-device` cookie): the mail counts against the device's own quota."),
  },
}
schemas["EmailCodeRequest"] = {
  "type": "object", "required": ["email", "code"], "description": "EmailCode." + NOTE_UNKNOWN,
  "properties": {
    "email": {"type": "string"},
    "code": sec_str("The mailed one-time code: `otp.length` digits (6 by default)."),
    "device_token": nsec_str("From an earlier sign-in (else the `__Host-authgate-device` cookie)."),
  },
}
schemas["LoginRequest"] = {
  "type": "object", "required": ["login", "password"], "description": "LoginBody." + NOTE_UNKNOWN,
  "properties": {
    "login": {"type": "string", "description": "Email address or username."},
    "password": sec_str("The password.", "password"),
    "device_token": nsec_str("From an earlier sign-in (else the `__Host-authgate-device` cookie): the account's own device keeps signing in while strangers' failures have locked the account."),
  },
}
schemas["ResetRequest"] = {
  "type": "object", "required": ["new_password"],
  "description": "ResetBody. One step: `email`, `code` and `new_password`. Two steps: `Authorization: Bearer <reset_token>` (a `prt1.` token) and `new_password` (then `email` and `code` are ignored)." + NOTE_UNKNOWN,
  "properties": {
    "email": nsec_str("Required for the one-step reset."),
    "code": nsec_str("The mailed reset code; required for the one-step reset."),
    "new_password": sec_str("The new password (checked against the password policy).", "password"),
    "device_token": nsec_str("From an earlier sign-in (else the `__Host-authgate-device` cookie)."),
  },
}
schemas["ChangePasswordRequest"] = {
  "type": "object", "required": ["current_password", "new_password"], "description": "ChangeBody." + NOTE_UNKNOWN,
  "properties": {
    "current_password": sec_str("The current password.", "password"),
    "new_password": sec_str("The new password.", "password"),
  },
}
schemas["ProfilePatch"] = {
  "type": "object",
  "description": "Any of these fields; absent leaves a field, null clears it (not `profile`, which replaces the whole object). Any other key, `email` included, is refused with a field error (400).",
  "additionalProperties": False,
  "properties": {
    "username": {"type": ["string", "null"]},
    "full_name": {"type": ["string", "null"]},
    "phone": {"type": ["string", "null"], "description": "E.164."},
    "profile": {"type": "object", "description": "Replaces the profile object."},
  },
}
schemas["EmailChangeRequest"] = {
  "type": "object", "required": ["email"], "description": "EmailChangeBody." + NOTE_UNKNOWN,
  "properties": {
    "email": {"type": "string", "description": "The new address."},
    "current_password": nsec_str("Required when the account has a password; an account without one needs a sign-in within `accounts.recent_sign_in` instead.", "password"),
  },
}
schemas["RefreshRequest"] = {
  "type": "object", "description": "RefreshBody. The body may be empty (read as `{}`): then the refresh cookie is used." + NOTE_UNKNOWN,
  "properties": {"refresh_token": nsec_str("The refresh token (else the `__Secure-authgate-refresh` cookie of the session `__Host-authgate-session` names).")},
}
schemas["LogoutRequest"] = {
  "type": "object", "description": "LogoutBody. The body may be empty (read as `{}`): the current session only." + NOTE_UNKNOWN,
  "properties": {
    "sessions": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Ids of the caller's sessions to end (default: the current one)."},
    "all": {"type": "boolean", "default": False, "description": "End every session of the caller (not nullable)."},
  },
}
schemas["SecondStepRequest"] = {
  "type": "object", "required": ["mfa_token", "code"], "description": "SecondStepBody." + NOTE_UNKNOWN,
  "properties": {
    "mfa_token": sec_str("From the first factor's answer."),
    "code": sec_str("A 6-digit code from the authenticator, or a recovery code (`xxxxx-xxxxx`; case, spaces and dashes do not matter)."),
    "device_token": nsec_str("From an earlier sign-in (else the `__Host-authgate-device` cookie)."),
  },
}
CRED = {"type": "object", "description": "The browser's `credential.toJSON()` (`RegistrationResponseJSON` / `AuthenticationResponseJSON`)."}
schemas["PasskeyNameRequest"] = {
  "type": "object", "description": "The body may be empty (read as `{}`)." + NOTE_UNKNOWN,
  "properties": {"name": {"type": ["string", "null"], "description": "What to call the passkey (1-64 characters; default `Passkey`)."},
                 "current_password": nsec_str("Required when the account has a password; an account without one needs a sign-in within `accounts.recent_sign_in` instead.", "password")},
}
schemas["PasskeyRenameRequest"] = {
  "type": "object", "required": ["name"], "description": NOTE_UNKNOWN.strip(),
  "properties": {"name": {"type": "string", "description": "1-64 characters, no control characters."}},
}
schemas["PasskeyRegisterRequest"] = {
  "type": "object", "required": ["challenge_id", "credential"], "description": NOTE_UNKNOWN.strip(),
  "properties": {"challenge_id": {"type": "string"}, "credential": CRED, "name": {"type": ["string", "null"], "description": "Replaces the name given with the options."}},
}
schemas["LoginPasskeyOptionsRequest"] = {
  "type": "object", "description": "The body may be empty. `login` is accepted and changes nothing: the options name no credential for anyone (which accounts have passkeys is not told)." + NOTE_UNKNOWN,
  "properties": {"login": {"type": ["string", "null"]}},
}
schemas["AssertionRequest"] = {
  "type": "object", "required": ["challenge_id", "credential"], "description": NOTE_UNKNOWN.strip(),
  "properties": {"challenge_id": {"type": "string"}, "credential": CRED, "device_token": nsec_str("From an earlier sign-in (else the `__Host-authgate-device` cookie).")},
}
schemas["MfaTokenRequest"] = {
  "type": "object", "required": ["mfa_token"], "description": NOTE_UNKNOWN.strip(),
  "properties": {"mfa_token": sec_str("From the first factor's answer.")},
}
schemas["SecondStepPasskeyRequest"] = {
  "type": "object", "required": ["mfa_token", "challenge_id", "credential"], "description": NOTE_UNKNOWN.strip(),
  "properties": {"mfa_token": sec_str("From the first factor's answer."), "challenge_id": {"type": "string"}, "credential": CRED, "device_token": nsec_str("From an earlier sign-in.")},
}
schemas["StepUpRequest"] = {
  "type": "object", "description": "Either `code`, or `challenge_id` (from POST /auth/login/passkey/options) and `credential`." + NOTE_UNKNOWN,
  "properties": {"code": nsec_str("A 6-digit code from the authenticator, or a recovery code."), "challenge_id": {"type": ["string", "null"]}, "credential": {"type": ["object", "null"], "description": CRED["description"]}},
}
schemas["CodeRequest"] = {
  "type": "object", "required": ["code"], "description": "CodeBody." + NOTE_UNKNOWN,
  "properties": {"code": sec_str("A 6-digit code from the authenticator (or, where stated, a recovery code).")},
}
schemas["TotpStartRequest"] = {
  "type": "object", "description": "StartBody. The body may be empty (read as `{}`)." + NOTE_UNKNOWN,
  "properties": {"current_password": nsec_str("Required when the account has a password; an account without one needs a sign-in within `accounts.recent_sign_in` instead.", "password")},
}
schemas["RolesRequest"] = {
  "type": "object", "required": ["roles"], "description": "RolesBody." + NOTE_UNKNOWN,
  "properties": {"roles": {"type": "array", "items": {"type": "string"}, "description": "Replaces the roles; each is trimmed and lower-cased, 1-64 of letters, digits, `_ - . :`."}},
}

def ok(desc, env, headers_=None, status="200"):
  r = {"description": desc, "content": {J: {"schema": ENV[env]}}}
  if headers_:
    r["headers"] = {k: href(v) for k, v in headers_.items()}
  return {status: r}

def account_op(path, method, opid, summary, desc, tag, body=None, body_required=True, success=None, errors=None, security=None, cookies=None, extra400=None, params=None):
  o = {"operationId": opid, "tags": [tag], "summary": summary, "description": desc}
  ps = list(params or [])
  for c in (cookies or []):
    ps.append(c)
  if ps: o["parameters"] = ps
  if body:
    o["requestBody"] = json_body(body, body_required)
  o["security"] = security if security is not None else []
  resp = {}
  resp.update(success)
  resp.update(common(body=bool(body), extra400=extra400, m405="{" in path))
  for k, v in (errors or {}).items():
    resp[k] = v
  o["responses"] = dict(sorted(resp.items()))
  op(PREFIX + path, method, o)

RL = "RATE_LIMITED (a per-IP or per-account/recipient quota)"

# register
account_op("/register", "post", "register", "Create an account",
  "Creates an account and mails an email verification code. The sign-up token comes back in the body and as the `__Host-authgate-signup` cookie.",
  "account", body="RegisterRequest",
  success=ok("Account created.", "RegisteredEnvelope", {"Set-Cookie": "Set-Cookie-Signup"}, "201"),
  errors={
    "409": jerr("ALREADY_EXISTS: the email, username or phone is taken (`fields` names it)."),
    "429": e429(RL + "."),
    "500": E500, "503": E503,
  }, extra400="field errors for `email`, `password` (required unless passwordless accounts are allowed; policy), `username`, `phone`, `full_name`, `profile` (too large)")

account_op("/verify", "post", "verifyEmail", "Verify the email address",
  "Verifies the address with the mailed code. Without the sign-up token (body or cookie) a password chosen at registration is dropped and a reset token is answered instead. With `sign_in: true` the client is signed in too (the token pair and device token in the body and as cookies). Clears the `__Host-authgate-signup` cookie.",
  "account", body="VerifyRequest", cookies=[
    {"name": "__Host-authgate-signup", "in": "cookie", "required": False, "description": "The sign-up token from the registration (used when the body has no `signup_token`).", "schema": {"type": "string"}},
    DEVICE_COOKIE],
  success=ok("Address verified.", "VerifiedEnvelope", {"Set-Cookie": "Set-Cookie-Signup-Clear"}),
  errors={
    "403": jerr("USER_BLOCKED: too many wrong codes lock the account for a while (with `Retry-After` when the lock ends).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST (only with `security.reveal_account_existence`), or " + E404),
    "409": jerr("ALREADY_VERIFIED (only with `security.reveal_account_existence`)."),
    "429": e429(RL + ", ATTEMPTS_EXCEEDED (too many wrong tries: the code is dead)."),
    "500": E500,
  }, extra400="field errors for `email`, `code` (must be `otp.length` digits); INVALID_OTP (wrong code or no live code), OTP_EXPIRED")

def code_send(path, opid, summary, desc, errors409=False):
  errs = {
    "404": jerr("USER_DOES_NOT_EXIST (only with `security.reveal_account_existence`), or " + E404),
    "429": e429(RL + ", OTP_STILL_VALID (a live, unused code of the same purpose was sent within `otp.resend_cooldown`)."),
    "500": E500,
  }
  if errors409:
    errs["409"] = jerr("ALREADY_VERIFIED (only with `security.reveal_account_existence`).")
  account_op(path, "post", opid, summary, desc, "account", body="EmailRequest", cookies=[DEVICE_COOKIE],
    success=ok("The same answer whether or not an account exists (unless `security.reveal_account_existence`).", "OtpSentEnvelope"),
    errors=errs, extra400="field error for `email`")

code_send("/verify/resend", "resendVerification", "Send a new verification code", "Mails a new email verification code once the last one is used or dead.", True)

TOK_ERRS = lambda extra=None: dict({
  "401": jerr("INVALID_CREDENTIALS (wrong login or password), UNAUTHENTICATED (the new session could not be made, e.g. the account changed meanwhile)."),
  "403": jerr("USER_BLOCKED (blocked by an admin, or locked after repeated failures: then with `Retry-After`), EMAIL_NOT_VERIFIED.", ["Retry-After"]),
  "429": e429(RL + "."),
  "500": E500, "503": E503,
}, **(extra or {}))

account_op("/login", "post", "login", "Sign in with a password",
  "Sign-in by email or username and password. Answers the tokens in the body and as cookies, with the device token; for an account with a second factor, a second step (`mfa_required`, no tokens, no cookies) instead.",
  "account", body="LoginRequest", cookies=[DEVICE_COOKIE],
  success=ok("Signed in, or a second factor is needed.", "SignInEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors=TOK_ERRS(), extra400="field error `login` is required (blank)")

code_send("/login/code", "loginCode", "Passwordless sign-in, step 1", "Mails a one-time sign-in code.")

account_op("/login/code/verify", "post", "loginCodeVerify", "Passwordless sign-in, step 2",
  "The mailed code signs in (and verifies the address on a first sign-in; a password chosen before verification is then cleared). For an account with a second factor, a second step instead (as /auth/login).",
  "account", body="EmailCodeRequest", cookies=[DEVICE_COOKIE],
  success=ok("Signed in, or a second factor is needed.", "SignInEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors={
    "401": jerr("UNAUTHENTICATED: the new session could not be made."),
    "403": jerr("USER_BLOCKED (blocked, or locked after too many wrong codes: then with `Retry-After`).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST (only with `security.reveal_account_existence`), or " + E404),
    "429": e429(RL + ", ATTEMPTS_EXCEEDED."),
    "500": E500,
  }, extra400="field errors for `email`, `code`; INVALID_OTP, OTP_EXPIRED")

code_send("/password/forgot", "passwordForgot", "Request a password reset code", "Mails a password reset code.")

account_op("/password/reset", "post", "passwordReset", "Reset the password",
  "One step (`email`, `code`, `new_password`), or the second of two (`Authorization: Bearer <reset_token>` from /auth/password/reset/verify, and `new_password`). Only a `prt1.` bearer token selects the two-step path; an access token in Authorization is ignored here. Every session of the account ends.",
  "account", body="ResetRequest", cookies=[DEVICE_COOKIE], security=[{"resetToken": []}, {}],
  success=ok("Password changed.", "EmptyEnvelope"),
  errors={
    "401": jerr("UNAUTHENTICATED (the reset token is not valid or was already used), TOKEN_EXPIRED (the reset token has expired)."),
    "403": jerr("USER_BLOCKED (locked after too many wrong codes, with `Retry-After`).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST (only with `security.reveal_account_existence`, or the account is gone), or " + E404),
    "429": e429(RL + ", ATTEMPTS_EXCEEDED."),
    "500": E500, "503": E503,
  }, extra400="field errors for `email`/`code` (required without a reset token), `new_password` (policy); INVALID_OTP, OTP_EXPIRED")

account_op("/password/reset/verify", "post", "passwordResetVerify", "Exchange a reset code for a reset token",
  "Two-step reset, step 1: the mailed code buys a short-lived single-use reset token.",
  "account", body="EmailCodeRequest", cookies=[DEVICE_COOKIE],
  success=ok("Code accepted.", "ResetTokenEnvelope"),
  errors={
    "403": jerr("USER_BLOCKED (locked after too many wrong codes, with `Retry-After`).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST (only with `security.reveal_account_existence`), or " + E404),
    "429": e429(RL + ", ATTEMPTS_EXCEEDED."),
    "500": E500,
  }, extra400="field errors for `email`, `code`; INVALID_OTP, OTP_EXPIRED")

account_op("/password/change", "post", "passwordChange", "Change the password",
  "Signed in: the current password, then the new one. Every other session ends. The caller is checked before the body is read.",
  "account", body="ChangePasswordRequest", security=SEC_REQ,
  success=ok("Password changed.", "EmptyEnvelope"),
  errors={
    "401": jerr(AUTH_401 + ", INVALID_CREDENTIALS (wrong current password)."),
    "403": jerr(CSRF_403 + "; USER_BLOCKED (locked after repeated password failures, with `Retry-After`).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
    "429": e429(RL + "."),
    "500": E500, "503": E503,
  }, extra400="field error for `new_password` (policy)")

account_op("/me", "get", "getMe", "The caller's profile", "Signed in.", "account", security=SEC_REQ,
  success=ok("Your profile.", "UserEnvelope"),
  errors={
    "401": jerr(AUTH_401 + "."),
    "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
    "500": E500,
  })

account_op("/me", "patch", "updateMe", "Update the caller's profile",
  "Signed in. Any of `username`, `full_name`, `phone`, `profile`; the email address changes through POST /auth/me/email. A new username ends the caller's other sessions.",
  "account", body="ProfilePatch", security=SEC_REQ,
  success=ok("Profile updated.", "UserEnvelope"),
  errors={
    "401": jerr(AUTH_401 + "."),
    "403": jerr(CSRF_403 + "."),
    "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
    "409": jerr("ALREADY_EXISTS: the username or phone is taken (`fields` names it)."),
    "500": E500,
  }, extra400="the body is not a JSON object; field errors: a value that is not a string or null, `profile` not an object or too large, an unknown key or `email`, an invalid `username`/`phone`/`full_name`")

account_op("/me/email", "post", "startEmailChange", "Email change, step 1",
  "Signed in. Mails a code to the new address after the current password (an account without a password needs a recent sign-in instead).",
  "account", body="EmailChangeRequest", security=SEC_REQ,
  success=ok("A code has been sent to the new address.", "OtpSentEnvelope"),
  errors={
    "401": jerr(AUTH_401 + ", INVALID_CREDENTIALS (wrong current password)."),
    "403": jerr(CSRF_403 + "; REAUTH_REQUIRED (no password and the sign-in is older than `accounts.recent_sign_in`); USER_BLOCKED (locked, with `Retry-After`).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
    "409": jerr("ALREADY_EXISTS: the new address belongs to another account (`fields.email`)."),
    "429": e429(RL + ", OTP_STILL_VALID."),
    "500": E500, "503": E503,
  }, extra400="field errors for `email` (invalid, or already your address), `current_password` (required when the account has one)")

account_op("/me/email/verify", "post", "finishEmailChange", "Email change, step 2",
  "Signed in. The code mailed to the new address makes it the account's verified address; every session ends and this device goes on in a new one (new tokens and cookies).",
  "account", body="EmailCodeRequest", security=SEC_REQ, cookies=[DEVICE_COOKIE],
  success=ok("Email changed; new tokens.", "TokenPairEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors={
    "401": jerr(AUTH_401 + "."),
    "403": jerr(CSRF_403 + "; USER_BLOCKED (locked after too many wrong codes, with `Retry-After`).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
    "409": jerr("ALREADY_EXISTS: the new address was taken since step 1."),
    "429": e429(RL + ", ATTEMPTS_EXCEEDED."),
    "500": E500,
  }, extra400="field errors for `email`, `code`; INVALID_OTP, OTP_EXPIRED")

# second factors
MFA_401 = jerr(AUTH_401 + ".")
MFA_403 = jerr(CSRF_403 + "; USER_BLOCKED (locked after repeated failures, with `Retry-After`).", ["Retry-After"])
account_op("/login/mfa", "post", "loginSecondFactor", "Sign-in, second step",
  "The `mfa_token` a first factor earned and a code from the authenticator (or a recovery code, used up) answer the tokens. A wrong code counts on the account's sign-in lock and spends one of the token's tries.",
  "mfa", body="SecondStepRequest", cookies=[DEVICE_COOKIE],
  success=ok("Signed in.", "TokenPairEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors={
    "401": jerr("UNAUTHENTICATED: the `mfa_token` is unknown, used, expired or out of tries (sign in again); or the new session could not be made."),
    "403": jerr("USER_BLOCKED (blocked, or locked after repeated failures: then with `Retry-After`).", ["Retry-After"]),
    "404": jerr("USER_DOES_NOT_EXIST: the account is gone, or " + E404),
    "429": e429(RL + "."),
    "500": E500,
  }, extra400="INVALID_OTP (a wrong or already used code)")
account_op("/mfa", "get", "getFactors", "The caller's second factors", "Signed in.", "mfa", security=SEC_REQ,
  success=ok("Your second factors.", "FactorsEnvelope"),
  errors={"401": MFA_401, "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404), "500": E500})
account_op("/mfa/totp", "post", "startTotp", "Start authenticator enrolment",
  "Signed in, with the current password (or a recent sign-in for an account without one). A new secret, shown once; it asks for nothing until confirmed. Starting again replaces an unconfirmed one.",
  "mfa", body="TotpStartRequest", body_required=False, security=SEC_REQ,
  success=ok("The secret.", "TotpEnrolmentEnvelope"),
  errors={"401": jerr(AUTH_401 + ", INVALID_CREDENTIALS (wrong current password)."),
          "403": jerr(CSRF_403 + "; REAUTH_REQUIRED (no password and the sign-in is older than `accounts.recent_sign_in`); USER_BLOCKED (with `Retry-After`).", ["Retry-After"]),
          "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
          "429": e429(RL + "."), "500": E500, "503": E503},
  extra400="field errors for `current_password` (required when the account has one), `totp` (already enrolled)")
account_op("/mfa/totp/confirm", "post", "confirmTotp", "Confirm authenticator enrolment",
  "Signed in. A first right code turns the authenticator on (every sign-in then asks for a code) and answers ten recovery codes, shown once.",
  "mfa", body="CodeRequest", security=SEC_REQ,
  success=ok("On; the recovery codes.", "RecoveryCodesEnvelope"),
  errors={"401": MFA_401, "403": MFA_403, "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
          "429": e429(RL + "."), "500": E500},
  extra400="INVALID_OTP (wrong code); field error for `code` (no enrolment under way)")
account_op("/mfa/totp", "delete", "removeTotp", "Remove the authenticator",
  "Signed in, with one of its codes or a recovery code. The recovery codes go with it.",
  "mfa", body="CodeRequest", security=SEC_REQ,
  success=ok("Removed.", "EmptyEnvelope"),
  errors={"401": MFA_401, "403": MFA_403, "404": jerr("NOT_FOUND: no authenticator; USER_DOES_NOT_EXIST: the account is gone. Or " + E404),
          "429": e429(RL + "."), "500": E500},
  extra400="INVALID_OTP")
account_op("/mfa/recovery-codes", "post", "regenerateRecoveryCodes", "New recovery codes",
  "Signed in, with a code from the authenticator: ten new recovery codes (shown once); the old ones die.",
  "mfa", body="CodeRequest", security=SEC_REQ,
  success=ok("The new codes.", "RecoveryCodesEnvelope"),
  errors={"401": MFA_401, "403": MFA_403, "404": jerr("NOT_FOUND: no authenticator; USER_DOES_NOT_EXIST: the account is gone. Or " + E404),
          "429": e429(RL + "."), "500": E500},
  extra400="INVALID_OTP; field error for `code` (a recovery code where an app code is needed)")
account_op("/mfa/verify", "post", "stepUp", "Step the session up",
  "Signed in with one factor: a code from the authenticator (or a recovery code), or a passkey's answer to the options of POST /auth/login/passkey/options, makes the caller's session a two-factor one (routes with `mfa = true`, roles of `mfa.required_roles`). Answers a new token pair: the refresh token rotates (the old one gets the same new pair within the reuse grace window).",
  "mfa", body="StepUpRequest", security=SEC_REQ,
  success=ok("Stepped up; new tokens (no `device_token`).", "TokenPairEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors={"401": jerr(AUTH_401 + "; the session ended meanwhile."), "403": MFA_403, "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404),
          "429": e429(RL + "."), "500": E500},
  extra400="INVALID_OTP; field error for `code` (the account has no second factor: enrol one first, or neither a code nor a passkey answer)")

PK_ERRS = lambda extra=None: dict({"401": jerr(AUTH_401 + "; INVALID_CREDENTIALS: the passkey's answer does not verify (another origin or RP id, a used or expired challenge, a cloned authenticator whose counter went back)."),
  "403": jerr(CSRF_403 + "; REAUTH_REQUIRED (the sign-in is older than `accounts.recent_sign_in`); MFA_REQUIRED (the account has a second factor and this session did not show it)."),
  "404": jerr("NOT_FOUND: no such passkey of the caller's, or passkeys are off (the public host is no domain); USER_DOES_NOT_EXIST: the account is gone. Or " + E404),
  "429": e429(RL + "."), "500": E500}, **(extra or {}))
account_op("/passkeys/register/options", "post", "passkeyRegisterOptions", "Add a passkey, step 1",
  "Signed in, with the current password (an account without one: a sign-in within `accounts.recent_sign_in`), in a two-factor session when the account has a second factor: options for navigator.credentials.create (a discoverable credential, user verification required, attestation none).",
  "mfa", body="PasskeyNameRequest", body_required=False, security=SEC_REQ,
  success=ok("The options.", "CeremonyEnvelope"), errors=PK_ERRS({"401": jerr(AUTH_401 + "; INVALID_CREDENTIALS: wrong current password."), "503": E503}), extra400="field errors for `name`, `current_password` (required when the account has one)")
account_op("/passkeys/register", "post", "passkeyRegister", "Add a passkey, step 2",
  "The authenticator's answer (`credential.toJSON()`). The first second factor of an account ends its other sessions.",
  "mfa", body="PasskeyRegisterRequest", security=SEC_REQ,
  success=ok("Passkey added.", "PasskeyEnvelope", None, "201"), errors=PK_ERRS(), extra400="field errors for `name`, `credential` (already registered, or not a WebAuthn answer)")
account_op("/passkeys", "get", "passkeyList", "The caller's passkeys", "Signed in.", "mfa", security=SEC_REQ,
  success=ok("Your passkeys.", "PasskeyListEnvelope"), errors={"401": jerr(AUTH_401 + "."), "404": jerr("USER_DOES_NOT_EXIST (the account is gone), or " + E404), "500": E500})
PKID = {"name": "id", "in": "path", "required": True, "description": "A passkey id (its credential id, base64url).", "schema": {"type": "string", "pattern": "^[^/]+$"}}
account_op("/passkeys/{id}", "patch", "passkeyRename", "Rename a passkey", "Signed in; only the caller's own.", "mfa", body="PasskeyRenameRequest", security=SEC_REQ, params=[PKID],
  success=ok("Renamed.", "PasskeyEnvelope"), errors=PK_ERRS(), extra400="field error for `name`")
account_op("/passkeys/{id}", "delete", "passkeyRemove", "Remove a passkey", "Signed in within `accounts.recent_sign_in`, in a two-factor session; only the caller's own. No body is read.", "mfa", security=SEC_REQ, params=[PKID],
  success=ok("Removed.", "EmptyEnvelope"), errors=PK_ERRS())
account_op("/login/passkey/options", "post", "passkeyLoginOptions", "Sign in with a passkey, step 1",
  "Options for navigator.credentials.get with no `allowCredentials` (discoverable credentials; the login page asks with `mediation: \"conditional\"` for autofill). Also the options of a passkey step-up (POST /auth/mfa/verify).",
  "account", body="LoginPasskeyOptionsRequest", body_required=False,
  success=ok("The options.", "CeremonyEnvelope"),
  errors={"404": jerr("NOT_FOUND: passkeys are off, or " + E404), "429": e429(RL + "."), "500": E500})
account_op("/login/passkey", "post", "passkeyLogin", "Sign in with a passkey, step 2",
  "The authenticator's answer names the account (its user handle); a verified passkey is two factors (`amr`: `hwk`, `mfa`). Answers the tokens as /auth/login does.",
  "account", body="AssertionRequest", cookies=[DEVICE_COOKIE],
  success=ok("Signed in.", "TokenPairEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors={"401": jerr("INVALID_CREDENTIALS: the answer does not verify, names no passkey of any account, or its challenge is used or expired; UNAUTHENTICATED: the new session could not be made."),
          "403": jerr("USER_BLOCKED, EMAIL_NOT_VERIFIED."), "404": jerr("NOT_FOUND: passkeys are off, or " + E404), "429": e429(RL + "."), "500": E500})
account_op("/login/mfa/passkey/options", "post", "passkeySecondFactorOptions", "Second step with a passkey, step 1",
  "Options naming the account's passkeys, for the `mfa_token` of a first factor.",
  "mfa", body="MfaTokenRequest",
  success=ok("The options.", "CeremonyEnvelope"),
  errors={"401": jerr("UNAUTHENTICATED: the `mfa_token` is over (used, expired or out of tries)."), "404": jerr("NOT_FOUND: passkeys are off; USER_DOES_NOT_EXIST: the account is gone. Or " + E404), "429": e429(RL + "."), "500": E500},
  extra400="field error for `mfa_token` (the account has no passkey)")
account_op("/login/mfa/passkey", "post", "passkeySecondFactor", "Second step with a passkey, step 2",
  "The authenticator's answer to those options; answers the tokens (`amr`: the first factor's, `hwk`, `mfa`).",
  "mfa", body="SecondStepPasskeyRequest", cookies=[DEVICE_COOKIE],
  success=ok("Signed in.", "TokenPairEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors={"401": jerr("UNAUTHENTICATED: the `mfa_token` is over; INVALID_CREDENTIALS: the answer does not verify or its challenge is used or expired."),
          "403": jerr("USER_BLOCKED."), "404": jerr("NOT_FOUND: passkeys are off; USER_DOES_NOT_EXIST. Or " + E404), "429": e429(RL + "."), "500": E500})

# session
account_op("/token/refresh", "post", "refreshTokens", "Refresh the tokens",
  "Rotates the refresh token (from the body, or the `__Secure-authgate-refresh` cookie that belongs to the session `__Host-authgate-session` names). A refresh token presented again after the grace window ends its session. The body may be empty. The refresh rate limit is checked first.",
  "session", body="RefreshRequest", body_required=False,
  cookies=[
    {"name": "__Secure-authgate-refresh", "in": "cookie", "required": False, "description": "The refresh token (used when the body has no `refresh_token`); a cookie-borne refresh must pass the CSRF check.", "schema": {"type": "string"}},
    {"name": "__Host-authgate-session", "in": "cookie", "required": False, "description": "The session the refresh cookie must belong to.", "schema": {"type": "string"}},
  ],
  success=ok("Tokens refreshed (no `device_token`).", "TokenPairEnvelope", {"Set-Cookie": "Set-Cookie-Tokens"}),
  errors={
    "401": jerr("UNAUTHENTICATED (no refresh token, not valid, or already used: the session has been ended), TOKEN_EXPIRED (the refresh token or session expired)."),
    "403": jerr(CSRF_403 + " (refresh by cookie); USER_BLOCKED."),
    "429": e429("RATE_LIMITED (the per-IP refresh quota)."),
    "500": E500,
  })

account_op("/logout", "post", "logout", "Sign out",
  "Signed in. No body: the current session; `sessions`: those of the caller's sessions; `all: true`: every session. Clears the token cookies when the current session was among those ended.",
  "session", body="LogoutRequest", body_required=False, security=SEC_REQ,
  success=ok("Signed out.", "RevokedEnvelope", {"Set-Cookie": "Set-Cookie-Clear"}),
  errors={
    "401": jerr(AUTH_401 + "."),
    "403": jerr(CSRF_403 + "."),
    "500": E500,
  })

account_op("/sessions", "get", "listSessions", "The caller's sessions", "Signed in: the caller's own sessions (\"logged-in devices\"), newest first, expired ones left out.",
  "session", security=SEC_REQ,
  success=ok("Your signed-in devices.", "SessionListEnvelope"),
  errors={"401": jerr(AUTH_401 + "."), "500": E500})

SID = {"name": "id", "in": "path", "required": True, "description": "A session id.", "schema": {"type": "string", "pattern": "^[^/]+$"}}
account_op("/sessions/{id}", "delete", "deleteSession", "End one of the caller's sessions",
  "Signed in. Someone else's session looks exactly like one that does not exist (404). Clears the token cookies when it is the current session.",
  "session", security=SEC_REQ, params=[SID],
  success=ok("Device signed out.", "RevokedEnvelope", {"Set-Cookie": "Set-Cookie-Clear"}),
  errors={
    "401": jerr(AUTH_401 + "."),
    "403": jerr(CSRF_403 + "."),
    "404": jerr("NOT_FOUND: no such session of the caller's."),
    "500": E500,
  })

# jwks
op(PREFIX + "/jwks.json", "get", {
  "operationId": "getJwks", "tags": ["keys"], "summary": "The public signing keys",
  "description": "The JWK set that verifies access tokens (`Cache-Control: public, max-age=300`). Not wrapped in the envelope.",
  "security": [],
  "responses": dict(sorted({
    "200": {"description": "The JWK set.", "headers": {"Cache-Control": {"description": "`public, max-age=300`", "schema": {"type": "string"}}}, "content": {J: {"schema": ref("Jwks")}}},
    **common(),
  }.items())),
})

op(PREFIX + "/openapi.json", "get", {
  "operationId": "getOpenApi", "tags": ["keys"], "summary": "This document",
  "description": "The OpenAPI 3.1 document of the gateway's own endpoints (src/http/openapi.json).",
  "security": [],
  "responses": dict(sorted({
    "200": {"description": "This document (`Cache-Control: public, max-age=300`), its paths moved under the configured prefix.", "headers": {"Cache-Control": {"description": "`public, max-age=300`", "schema": {"type": "string"}}}, "content": {J: {"schema": {"type": "object", "required": ["openapi", "info", "paths"]}}}},
    **common(),
  }.items())),
})

# admin
ADM_401 = jerr(AUTH_401 + ". Checked before the id and the body.")
ADM_403 = jerr("FORBIDDEN: the caller lacks the `admin` role, or " + CSRF_403[len("FORBIDDEN: "):] + ".")
UID = {"name": "id", "in": "path", "required": True, "description": "A user id (UUID); anything else is answered 404 NOT_FOUND.", "schema": {"type": "string", "format": "uuid"}}
def admin_op(path, method, opid, summary, desc, success, body=None, n404="NOT_FOUND: the id is not a UUID; USER_DOES_NOT_EXIST: no such user.", params=None, e500=True):
  errs = {"401": ADM_401, "403": ADM_403, "404": jerr(n404 + " Or " + E404)}
  if e500: errs["500"] = E500
  account_op("/admin" + path, method, opid, summary, desc + " Needs the `admin` role.", "admin", body=body, security=SEC_REQ,
             success=success, errors=errs, params=params,
             extra400=("field error for `roles` (not a role name)" if body else None))

admin_op("/users", "get", "adminListUsers", "List and search users", "Users, searched by `q`, paged by `offset` and `limit`.",
  ok("Users.", "AdminUserListEnvelope"), n404=E404[:-1] + ".", params=[
    {"name": "q", "in": "query", "required": False, "description": "Search text (email, username, name).", "schema": {"type": "string"}},
    {"name": "offset", "in": "query", "required": False, "description": "Users to skip (default 0; a value that is not a number counts as 0).", "schema": {"type": "integer", "minimum": 0, "default": 0}},
    {"name": "limit", "in": "query", "required": False, "description": "Page size (default 50; clamped to 1..500; a value that is not a number counts as 50).", "schema": {"type": "integer", "minimum": 0, "default": 50}},
  ])
admin_op("/users/{id}", "get", "adminGetUser", "A user", "The user with account state.", ok("User.", "AdminUserEnvelope"), params=[UID])
admin_op("/users/{id}/block", "post", "adminBlockUser", "Block a user", "Blocks the account and ends every session. No body is read.", ok("User blocked; their sessions ended.", "AdminUserEnvelope"), params=[UID])
admin_op("/users/{id}/unblock", "post", "adminUnblockUser", "Unblock a user", "Unblocks the account and clears any lockout. No body is read.", ok("User unblocked.", "AdminUserEnvelope"), params=[UID])
admin_op("/users/{id}/roles", "put", "adminSetRoles", "Set a user's roles", "Replaces the roles; every session of the user ends so that new tokens carry them. The body is read before the id is checked.", ok("Roles set.", "AdminUserEnvelope"), body="RolesRequest", params=[UID])
admin_op("/users/{id}/sessions", "get", "adminListSessions", "A user's sessions", "An unknown user has none (an empty list).", ok("Sessions (`current` is always false).", "SessionListEnvelope"), n404="NOT_FOUND: the id is not a UUID.", params=[UID])
admin_op("/users/{id}/sessions", "delete", "adminRevokeSessions", "End all of a user's sessions", "", ok("Sessions revoked.", "RevokedEnvelope"), n404="NOT_FOUND: the id is not a UUID.", params=[UID])
admin_op("/users/{id}/mfa", "delete", "adminResetFactors", "Reset a user's second factors", "Removes the authenticator and recovery codes; every session of the user ends. No body is read.", ok("Factors removed; sessions ended.", "RevokedEnvelope"), params=[UID])
admin_op("/users/{id}/sessions/{sid}", "delete", "adminRevokeSession", "End one of a user's sessions", "", ok("Session revoked.", "RevokedEnvelope"), n404="NOT_FOUND: the id is not a UUID, or the user has no such session.", params=[UID, {"name": "sid", "in": "path", "required": True, "description": "A session id.", "schema": {"type": "string", "pattern": "^[^/]+$"}}])

# ---------- forward-auth ----------
def hp(name, desc): return pc({"name": name, "in": "header", "required": False, "description": desc, "schema": {"type": "string"}})
AR_HEADERS = [
  hp("X-Original-URL", "nginx family: the original absolute URL (`$scheme://$host:$server_port$request_uri`): http(s), a host with an optional numeric port, no fragment. Believed only from `server.trusted_proxies`."),
  hp("X-Original-URI", "nginx family: the original path and query (`$request_uri`); must agree with X-Original-URL when both are sent. Believed only from `server.trusted_proxies`."),
  hp("X-Original-Method", "nginx family: the original method (upper-case). Believed only from `server.trusted_proxies`."),
]
FA_HEADERS = [
  hp("X-Forwarded-Method", "Traefik/Caddy family: the original method (upper-case). Believed only from `server.trusted_proxies`."),
  hp("X-Forwarded-Proto", "Traefik/Caddy family: the original scheme (http, https, ws, wss). Believed only from `server.trusted_proxies`."),
  hp("X-Forwarded-Host", "Traefik/Caddy family: the original host (a host name with an optional numeric port). Believed only from `server.trusted_proxies`."),
  hp("X-Forwarded-Uri", "Traefik/Caddy family: the original path and query. Believed only from `server.trusted_proxies`."),
]
RD = pc({"name": "rd", "in": "query", "required": False, "description": "Where to return after signing in (only `public_url`'s host or `server.allowed_redirect_hosts`). Its presence asks for a 302 instead of a 401 (not at the nginx door).", "schema": {"type": "string"}}, "validateRd")
ID_HEADERS = {h: href(h) for h in ["X-Auth-User-Id", "X-Auth-User-Email", "X-Auth-User-Name", "X-Auth-User-Roles", "X-Auth-Session-Id"]}
V400 = ("INVALID_REQUEST: " + PRE_400[len("INVALID_REQUEST: "):] + "; a request header whose name with underscores stands for an identity or override header (`X_Auth_User_Id`); "
        "from a trusted proxy: a description the door cannot believe (a malformed X-Original-URL, X-Original-URL and X-Original-URI disagreeing, the two families disagreeing at /auth/validate, "
        "a per-family door without the method and URI, a method that is not an upper-case HTTP method, a URI that is not a path or does not normalize, a host that is not a host name, a scheme other than http/https/ws/wss); a malformed override (`X-HTTP-Method-Override`, `_method`, ...).")
V401 = "UNAUTHENTICATED (no valid token naming a live session), TOKEN_EXPIRED: `Location` names the login page with the URL to return to (nginx's `error_page 401` uses it). MFA_REQUIRED at the nginx door (signed in with one factor where the rule needs two): `Location` names the step-up page instead."
V403 = "FORBIDDEN: signed in, but the route's rule (roles), an override's or a suffix-matched route's rule does not admit the caller. MFA_REQUIRED (not at the nginx door, which answers 401): signed in with one factor where the rule needs two; `Location` names the step-up page."
NOBODY = " (No body: HEAD.)"
VR = {}
for head in (False, True):
  k = "Head" if head else ""
  r200 = {"description": "Allowed. The identity headers are on the answer when a signed-in caller was admitted." + (" HEAD (as nginx asks): no body; `Content-Type: application/json`." if head else " `data` is the identity, or `{}` on a public route for a caller without valid credentials."),
          "headers": ID_HEADERS}
  if not head:
    r200["content"] = {J: {"schema": ENV["AllowedEnvelope"]}}
  VR["200" + k] = rc("ValidateAllowed" + k, r200)
  def ej(desc, hs=None):
    x = jerr(desc, hs)
    if head:
      x = {"description": desc + NOBODY}
      if hs: x["headers"] = {h: href(h) for h in hs}
    return x
  VR["400" + k] = rc("ValidateBadRequest" + k, ej(V400))
  VR["401" + k] = rc("ValidateUnauthenticated" + k, ej(V401, ["Location"]))
  VR["403" + k] = rc("ValidateForbidden" + k, ej(V403))
  VR["431" + k] = E431 if not head else rc("HeadersTooLargeHead", {"description": E431_R["description"] + NOBODY})
VR["302"] = rc("ValidateRedirect", {"description": "Not signed in (or signed in with one factor where the rule needs two), and the request is a browser's (`Accept` contains text/html) or carries `?rd=`: to the login page (the step-up page) with the original URL to return to. No body. Never when the nginx family described the request (never at /auth/validate/auth-request).",
                "headers": {"Location": href("Location")}})

doors = [
  ("/validate", "validate", "Forward-auth, either header family",
   "Reads both header families (nginx: X-Original-*; Traefik/Caddy: X-Forwarded-*) from a trusted proxy and refuses (400) a request whose families disagree on anything both state. A trusted proxy that names no method means GET. From an untrusted peer the description is ignored and the request is judged as itself (is the caller signed in).",
   AR_HEADERS + FA_HEADERS, True),
  ("/validate/auth-request", "validateAuthRequest", "Forward-auth for nginx auth_request and ingress-nginx auth-url",
   "Believes only the nginx family (X-Original-URL or X-Original-URI, X-Original-Method); from a trusted proxy both the method and the URI are required. Never answers 302: nginx takes only 2xx, 401 and 403, so a 401 carries the login page in `Location`.",
   AR_HEADERS, False),
  ("/validate/forward-auth", "validateForwardAuth", "Forward-auth for Traefik ForwardAuth and Caddy forward_auth",
   "Believes only the Traefik/Caddy family (X-Forwarded-Method, -Proto, -Host, -Uri); from a trusted proxy the method and the URI are required.",
   FA_HEADERS, True),
]
COMMON_V = (" Any method is accepted (it is the method judged when no method is described; GET and HEAD are what front proxies send); no body is read. The token comes from `Authorization: Bearer` or the access cookie. "
            "A route no rule matches needs a signed-in caller; a method or path named by override headers (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override, path overrides where kept) or `_method` must be allowed too.")
METHODS = ["get", "head", "post", "put", "patch", "delete", "options", "trace"]
for path, opid, summary, desc, hdrs, redirects in doors:
  for m in METHODS:
    head = m == "head"
    k = "Head" if head else ""
    r = {"200": VR["200" + k]}
    if redirects:
      r["302"] = VR["302"]
    for st in ("400", "401", "403", "431"):
      r[st] = VR[st + k]
    o = {"operationId": opid + ("" if m == "get" else m.capitalize()), "tags": ["forward-auth"],
         "summary": summary + ("" if m == "get" else f" ({m.upper()})"),
         "description": desc + COMMON_V if m == "get" else f"As GET {PREFIX}{path}, asked with {m.upper()}" + (": no body in any answer." if head else "."),
         "parameters": list(hdrs) + [RD],
         "security": [{"bearerAuth": []}, {"cookieAuth": []}, {}],
         "responses": r}
    op(PREFIX + path, m, o)

# ---------- ops ----------
def ops_op(path, opid, summary, desc, r200, extra=None, head=False):
  r = {}
  r.update(r200)
  r["400"] = jerr(PRE_400 + ".")
  if not head:
    r["405"] = jerr("METHOD_NOT_ALLOWED: only GET and HEAD (no `Allow` header).")
  else:
    r["400"] = {"description": r["400"]["description"] + " (No body: HEAD.)"}
  r["431"] = E431 if not head else {"description": E431_R["description"] + " (No body: HEAD.)"}
  for k, v in (extra or {}).items(): r[k] = v
  o = {"operationId": opid, "tags": ["ops"], "summary": summary, "description": desc, "security": [], "responses": dict(sorted(r.items()))}
  return o

for head in (False, True):
  m = "head" if head else "get"
  sfx = "Head" if head else ""
  def body(env):
    return {} if head else {"content": {J: {"schema": ENV[env]}}}
  op("/healthz", m, ops_op("/healthz", "healthz" + sfx, "Liveness", "Alive. Answered on every host, before the auth prefix and the routes.",
     {"200": {"description": "Alive." + (" No body." if head else ""), **body("HealthEnvelope")}}, head=head))
  nr = "NOT_READY: shutting down (draining), or no upstream routes are configured; `Retry-After: 5`."
  op("/readyz", m, ops_op("/readyz", "readyz" + sfx, "Readiness", "Ready to take traffic: not draining and at least one route configured.",
     {"200": {"description": "Ready." + (" No body." if head else ""), **body("ReadinessEnvelope")}},
     {"503": ({"description": nr + " (No body: HEAD.)", "headers": {"Retry-After": href("Retry-After")}} if head else jerr(nr, ["Retry-After"]))}, head=head))
  mdesc = ("Prometheus/OpenMetrics exposition on the main listener, only when `server.metrics_on_main_listener` is on, and only to loopback peers and `server.trusted_proxies`; anyone else gets 404 (for any method). "
           "When it is off, /metrics is not the gateway's: the path goes to the route table like any other (proxied, or 404). `server.metrics_listen` serves the metrics on their own listener.")
  r200 = {"description": "The metrics." + (" No body." if head else "")}
  if not head:
    r200["content"] = {"application/openmetrics-text; version=1.0.0; charset=utf-8": {"schema": {"type": "string"}}}
  n404 = "NOT_FOUND: metrics are not served to this peer (or not on the main listener)."
  op("/metrics", m, ops_op("/metrics", "metrics" + sfx, "Metrics", mdesc, {"200": r200},
     {"404": ({"description": n404 + " (No body: HEAD.)"} if head else jerr(n404))}, head=head))

# ---------- pages ----------
CSRF_COOKIE_P = pc({"name": "__Host-authgate-csrf", "in": "cookie", "required": False, "description": "The double-submit CSRF token (43 base64url characters) an earlier page set; the form's `csrf` field must equal it.", "schema": {"type": "string"}})
RD_Q = pc({"name": "rd", "in": "query", "required": False, "description": "Where to return after signing in (kept only if the redirect policy allows it).", "schema": {"type": "string"}}, "pageRd")
DEVICE_P = pc(DEVICE_COOKIE)
PAGE_ERR_400_JSON = " Before routing (" + PRE_400[len("INVALID_REQUEST: checked before routing ("):-1] + ") the answer is the JSON envelope instead."
E400_PRE = E400_PRE_J
E400_PRE_HEAD = rc("PreRoutingBadRequestHead", {"description": PRE_400 + "." + NOBODY})
E431_HEAD = VR["431Head"]
PAGE_HEADERS = {"Content-Security-Policy": href("Content-Security-Policy"), "Set-Cookie": href("Set-Cookie-Page")}
REDIR = {"Location": href("Location"), "Set-Cookie": href("Set-Cookie-Page")}
PAGE_OK = rc("Page", html_resp("The page."))
PAGE_OK_HEAD = rc("PageHead", {"description": "The page's headers; no body.", "headers": PAGE_HEADERS})

def page_get(path, opid, summary, desc, signed_in=False, redirect=None, e500=False, head=False, css=False, js=False):
  r = {}
  if css:
    kind, mime = ("script", "text/javascript; charset=utf-8") if js else ("stylesheet", "text/css; charset=utf-8")
    r["200"] = {"description": f"The {kind} (`Cache-Control: public, max-age=3600`)." + (" No body." if head else ""),
                **({} if head else {"content": {mime: {"schema": {"type": "string"}}}})}
  else:
    r["200"] = PAGE_OK_HEAD if head else PAGE_OK
  if redirect:
    r["303"] = {"description": redirect, "headers": REDIR}
  r["400"] = E400_PRE_HEAD if head else E400_PRE
  r["431"] = E431_HEAD if head else E431
  if e500:
    for st, d in (("404", "USER_DOES_NOT_EXIST: the account is gone (an HTML page that says so)."), ("500", "INTERNAL: the store failed (an HTML page that says so).")):
      x = html_resp(d)
      if head: x = {"description": d + " No body.", "headers": x["headers"]}
      r[st] = x
  params = [] if css else [RD_Q, CSRF_COOKIE_P]
  o = {"operationId": opid + ("Head" if head else ""), "tags": ["pages"], "summary": summary + (" (HEAD)" if head else ""),
       "description": (desc + " Answers HEAD as well.") if not head else f"As GET {path}, without a body.",
       "security": [{"cookieAuth": []}, {}] if signed_in else [],
       "responses": dict(sorted(r.items()))}
  if params: o["parameters"] = params
  op(path, "head" if head else "get", o)

def both(path, opid, summary, desc, **kw):
  page_get(path, opid, summary, desc, **kw)
  page_get(path, opid, summary, desc, head=True, **kw)

both(PREFIX + "/ui/style.css", "pageStylesheet", "The pages' stylesheet", "The hosted pages' stylesheet.", css=True)
both(PREFIX + "/ui/passkeys.js", "pageScript", "The pages' one script", "The passkey script (`text/javascript`, `Cache-Control: public, max-age=3600`): it shows the passkey controls and runs their ceremonies; every other form works without it.", css=True, js=True)
LOGIN_DESC = ("Already signed in (access cookie): 303 back to `rd` (or `/`). A valid refresh cookie on a top-level navigation (GET, `Sec-Fetch-Dest` absent or `document`): refreshed here (new token cookies), then 303 back. "
              "Otherwise the sign-in form; the token cookies of a revoked or expired session are cleared. `?notice=reset` shows the password-changed notice. When the return URL's host does not receive this gateway's cookies, a 200 page says so instead of redirecting.")
LOGIN_303 = "Signed in already, or refreshed by the refresh cookie: back to `rd` (or `/`). With a refresh, the new token cookies are set."
both(PREFIX + "/login", "loginPageShort", "The login page (short address)", "The login page at its short address (as GET /auth/ui/login). " + LOGIN_DESC, redirect=LOGIN_303)
both(PREFIX + "/ui/login", "loginPage", "The login page", LOGIN_DESC, redirect=LOGIN_303)
both(PREFIX + "/ui/code", "codePage", "Passwordless sign-in form", "The form that asks for the address to mail a sign-in code to.")
both(PREFIX + "/ui/signup", "signupPage", "Sign-up form", "The sign-up form.")
both(PREFIX + "/ui/forgot", "forgotPage", "Forgotten-password form", "The form that asks for the address to mail a reset code to.")
both(PREFIX + "/ui/signed-out", "signedOutPage", "Signed-out page", "Says the browser is signed out.")
both(PREFIX + "/ui/devices", "devicesPage", "The signed-in devices page", "Signed in (the access cookie only; a Bearer header does not count): the caller's sessions, each with a sign-out button.",
  signed_in=True, redirect="Not signed in: to the login page, then back here.", e500=True)
both(PREFIX + "/ui/security", "securityPage", "The security page", "Signed in (the access cookie): the authenticator (set up, renew recovery codes, remove).",
  signed_in=True, redirect="Not signed in: to the login page, then back here.", e500=True)
both(PREFIX + "/ui/step-up", "stepUpPage", "The step-up page", "Signed in (the access cookie) with one factor: the form for a second factor (or, for an account without one, the way to set one up).",
  signed_in=True, redirect="Not signed in: to the login page, then back here; already two-factor: back to `rd`.", e500=True)
both(PREFIX + "/ui/email", "emailPage", "The email change page", "Signed in (the access cookie): the form for a new address.",
  signed_in=True, redirect="Not signed in: to the login page, then back here.", e500=True)

FIELD_DESC = {"login": "Email address or username.", "password": "The password.", "email": "The email address.", "code": "The mailed code.",
              "new_password": "The new password.", "current_password": "The current password (when the account has one).",
              "id": "The passkey's id.", "name": "The passkey's new name.", "passkey": "`1` when the page offers a passkey (display only).",
              "mfa_token": "The second step's token (a hidden field of the second-step form).", "remove_code": "A code from the authenticator or a recovery code.",
              "username": "Optional.", "full_name": "Optional.", "session": "The id of the session to end.", "all": "`1` ends every session of the account."}

GENERIC = ("An HTML page: the form again (or a page that says what went wrong) with the API's error message and field errors, with the status the JSON API would answer. "
           "On every form post: FORBIDDEN (403: the form's `csrf` does not match the `__Host-authgate-csrf` cookie, the browser had none, or `Sec-Fetch-Site` names another site), "
           "UNSUPPORTED_MEDIA_TYPE (415: not application/x-www-form-urlencoded), PAYLOAD_TOO_LARGE (413), REQUEST_TIMEOUT (408). The codes each form answers are in its description.")
ST = {"400": "INVALID_REQUEST (field errors, or the body could not be read), INVALID_OTP, OTP_EXPIRED." + PAGE_ERR_400_JSON,
      "401": "INVALID_CREDENTIALS, UNAUTHENTICATED, TOKEN_EXPIRED.",
      "403": "FORBIDDEN (CSRF), USER_BLOCKED (with `Retry-After` when the lock ends), EMAIL_NOT_VERIFIED, REAUTH_REQUIRED.",
      "404": "USER_DOES_NOT_EXIST (only with `security.reveal_account_existence`, or the account is gone).",
      "405": "METHOD_NOT_ALLOWED.",
      "408": "REQUEST_TIMEOUT.",
      "409": "ALREADY_EXISTS, ALREADY_VERIFIED.",
      "413": "PAYLOAD_TOO_LARGE.",
      "415": "UNSUPPORTED_MEDIA_TYPE.",
      "429": "RATE_LIMITED, OTP_STILL_VALID, ATTEMPTS_EXCEEDED; with `Retry-After`.",
      "500": "INTERNAL: the store failed.",
      "503": "SERVICE_BUSY: the password-hashing threads are all taken; with `Retry-After`."}
PR = {}
for st, d in ST.items():
  hs = ["Retry-After"] if st in ("403", "429", "503") else None
  PR[st] = rc("PageError" + st, html_resp(d + " " + GENERIC, hs, also_json=(st == "400")))

def page_post(path, opid, summary, desc, fields, required, ok200=None, ok303=None, codes="", signed_in=False, pw=()):
  props = {"csrf": {"type": "string", "description": "The CSRF token from the page (must equal the `__Host-authgate-csrf` cookie)."},
           "rd": {"type": "string", "description": "Where to return after signing in (kept only if the redirect policy allows it)."}}
  for n in fields:
    props[n] = {"type": "string", "description": FIELD_DESC.get(n, "")}
    if n in pw: props[n]["format"] = "password"
  schema = {"type": "object", "properties": props, "required": ["csrf"] + list(required),
            "description": "An urlencoded form; the first value of each name counts, unknown names are ignored, a missing field reads as empty."}
  r = {}
  if ok200: r["200"] = html_resp(ok200)
  if ok303: r["303"] = {"description": ok303, "headers": REDIR}
  for st in ST:
    if st == "405": continue
    r[st] = PR[st]
  r["431"] = E431
  o = {"operationId": opid, "tags": ["pages"], "summary": summary,
       "description": (desc + " " if desc else "") + "Errors are HTML pages with the status the JSON API would answer; codes: " + codes + " FORBIDDEN (CSRF), UNSUPPORTED_MEDIA_TYPE, PAYLOAD_TOO_LARGE, REQUEST_TIMEOUT.",
       "parameters": [RD_Q, CSRF_COOKIE_P] + ([] if signed_in else [DEVICE_P]),
       "requestBody": {"required": True, "content": {FORM: {"schema": schema}}},
       "security": [{"cookieAuth": []}, {}] if signed_in else [],
       "responses": dict(sorted(r.items()))}
  op(PREFIX + "/ui/" + path, "post", o)

SIGNED_IN_303 = "Signed in: back to `rd` (or `/`), with the token cookies, the device cookie and a new CSRF cookie."
page_post("login", "loginSubmit", "Sign in (form)", "Sign-in by login and password.", ["login", "password"], ["login", "password"],
  ok200="The form again with the error, or (signed in) a page saying the return URL's host cannot receive the sign-in.", ok303=SIGNED_IN_303, codes="INVALID_REQUEST (400), INVALID_CREDENTIALS (401), UNAUTHENTICATED (401), USER_BLOCKED (403), EMAIL_NOT_VERIFIED (403), RATE_LIMITED (429), SERVICE_BUSY (503), INTERNAL (500),", pw=("password",))
page_post("code", "codeSubmit", "Ask for a sign-in code (form)", "Mails a sign-in code; then the form to enter it.", ["email"], ["email"],
  ok200="The code-entry form with the notice (the same for any address).", codes="INVALID_REQUEST (400), USER_DOES_NOT_EXIST (404), RATE_LIMITED, OTP_STILL_VALID (429), INTERNAL (500),")
page_post("code/verify", "codeVerifySubmit", "Sign in with a code (form)", "The mailed code signs in.", ["email", "code"], ["email", "code"],
  ok200="Signed in, but the return URL's host cannot receive the sign-in: a page that says so.", ok303=SIGNED_IN_303, codes="INVALID_REQUEST, INVALID_OTP, OTP_EXPIRED (400), UNAUTHENTICATED (401), USER_BLOCKED (403), USER_DOES_NOT_EXIST (404), ATTEMPTS_EXCEEDED, RATE_LIMITED (429), INTERNAL (500),")
page_post("signup", "signupSubmit", "Create an account (form)", "Creates an account; then the verify form, with the `__Host-authgate-signup` cookie.", ["email", "password", "username", "full_name"], ["email"],
  ok200="Account created: the verify form with the notice (and the sign-up cookie).", codes="INVALID_REQUEST (400), ALREADY_EXISTS (409), RATE_LIMITED (429), SERVICE_BUSY (503), INTERNAL (500),", pw=("password",))
page_post("verify", "verifySubmit", "Verify the address (form)", "The mailed code verifies the address and signs in (the `__Host-authgate-signup` cookie keeps the password chosen at sign-up; it is cleared).", ["email", "code"], ["email", "code"],
  ok200="Verified, but the account is blocked: the sign-in form with a notice; or the return URL's host cannot receive the sign-in.", ok303=SIGNED_IN_303 + " The sign-up cookie is cleared.", codes="INVALID_REQUEST, INVALID_OTP, OTP_EXPIRED (400), UNAUTHENTICATED (401), USER_BLOCKED (403), USER_DOES_NOT_EXIST (404), ALREADY_VERIFIED (409), ATTEMPTS_EXCEEDED, RATE_LIMITED (429), INTERNAL (500),")
page_post("verify/resend", "verifyResendSubmit", "Send a new verification code (form)", "", ["email"], ["email"],
  ok200="The verify form with the notice.", codes="INVALID_REQUEST (400), USER_DOES_NOT_EXIST (404), ALREADY_VERIFIED (409), RATE_LIMITED, OTP_STILL_VALID (429), INTERNAL (500),")
page_post("forgot", "forgotSubmit", "Ask for a reset code (form)", "", ["email"], ["email"],
  ok200="The reset form with the notice (the same for any address).", codes="INVALID_REQUEST (400), USER_DOES_NOT_EXIST (404), RATE_LIMITED, OTP_STILL_VALID (429), INTERNAL (500),")
page_post("reset", "resetSubmit", "Reset the password (form)", "Email, code and new password; every session ends.", ["email", "code", "new_password"], ["email", "code", "new_password"],
  ok303="Password changed: to the login page with `?notice=reset` (and `rd`); the token cookies are cleared.", codes="INVALID_REQUEST, INVALID_OTP, OTP_EXPIRED (400), USER_BLOCKED (403), USER_DOES_NOT_EXIST (404), ATTEMPTS_EXCEEDED, RATE_LIMITED (429), SERVICE_BUSY (503), INTERNAL (500),", pw=("new_password",))
page_post("email", "emailSubmit", "Email change, step 1 (form)", "Signed in (access cookie): mails a code to the new address.", ["email", "current_password"], ["email"],
  ok200="The confirm form with the notice.", ok303="Not signed in: to the login page, then back to the email page.", codes="INVALID_REQUEST (400), INVALID_CREDENTIALS (401), REAUTH_REQUIRED, USER_BLOCKED (403), USER_DOES_NOT_EXIST (404), ALREADY_EXISTS (409), RATE_LIMITED, OTP_STILL_VALID (429), SERVICE_BUSY (503), INTERNAL (500),", signed_in=True, pw=("current_password",))
page_post("email/verify", "emailVerifySubmit", "Email change, step 2 (form)", "Signed in (access cookie): the code makes the new address the account's; every session ends, this browser goes on in a new one.", ["email", "code"], ["email", "code"],
  ok303="Changed: to the devices page with new token cookies and a new CSRF cookie; or, not signed in, to the login page.", codes="INVALID_REQUEST, INVALID_OTP, OTP_EXPIRED (400), UNAUTHENTICATED (401), USER_BLOCKED (403), USER_DOES_NOT_EXIST (404), ALREADY_EXISTS (409), ATTEMPTS_EXCEEDED, RATE_LIMITED (429), INTERNAL (500),", signed_in=True)
page_post("mfa", "secondFactorSubmit", "Sign-in, second step (form)", "The second-step form the login and code forms lead to: `mfa_token` and a code.", ["mfa_token", "code"], ["mfa_token", "code"],
  ok200="The form again with the error; the sign-in form when the step is over; or (signed in) a page saying the return URL's host cannot receive the sign-in.", ok303=SIGNED_IN_303, codes="INVALID_OTP (400), UNAUTHENTICATED (401), USER_BLOCKED (403), RATE_LIMITED (429), INTERNAL (500),")
page_post("step-up", "stepUpSubmit", "Step the session up (form)", "Signed in (access cookie): a code makes the session a two-factor one.", ["code"], ["code"],
  ok303="Stepped up: back to `rd` (or `/`) with new token cookies; not signed in: to the login page.", codes="INVALID_REQUEST, INVALID_OTP (400), UNAUTHENTICATED (401), USER_BLOCKED (403), RATE_LIMITED (429), INTERNAL (500),", signed_in=True)
page_post("security/totp", "securityTotpSubmit", "Start authenticator enrolment (form)", "Signed in: the QR code and the key (shown once, `Cache-Control: no-store`).", ["current_password"], [],
  ok200="The enrolment page, or the security page with the error.", ok303="Not signed in: to the login page, then back to the security page.", codes="INVALID_REQUEST (400), INVALID_CREDENTIALS (401), REAUTH_REQUIRED, USER_BLOCKED (403), RATE_LIMITED (429), SERVICE_BUSY (503), INTERNAL (500),", signed_in=True, pw=("current_password",))
page_post("security/totp/confirm", "securityTotpConfirmSubmit", "Confirm authenticator enrolment (form)", "Signed in: the first code turns it on; the recovery codes, shown once.", ["code"], ["code"],
  ok200="The recovery codes (`Cache-Control: no-store`), or the security page with the error.", ok303="Not signed in: to the login page.", codes="INVALID_REQUEST, INVALID_OTP (400), USER_BLOCKED (403), RATE_LIMITED (429), INTERNAL (500),", signed_in=True)
page_post("security/totp/remove", "securityTotpRemoveSubmit", "Remove the authenticator (form)", "Signed in: with one of its codes or a recovery code.", ["remove_code"], ["remove_code"],
  ok200="The security page with a notice or the error.", ok303="Not signed in: to the login page.", codes="INVALID_OTP (400), USER_BLOCKED (403), NOT_FOUND (404), RATE_LIMITED (429), INTERNAL (500),", signed_in=True)
page_post("security/recovery-codes", "securityRecoveryCodesSubmit", "New recovery codes (form)", "Signed in: with a code from the authenticator.", ["code"], ["code"],
  ok200="The new recovery codes (`Cache-Control: no-store`), or the security page with the error.", ok303="Not signed in: to the login page.", codes="INVALID_REQUEST, INVALID_OTP (400), USER_BLOCKED (403), NOT_FOUND (404), RATE_LIMITED (429), INTERNAL (500),", signed_in=True)
page_post("security/passkeys/rename", "securityPasskeyRenameSubmit", "Rename a passkey (form)", "Signed in: `id` and the new `name`.", ["id", "name"], ["id", "name"],
  ok200="The security page with a notice or the error.", ok303="Not signed in: to the login page.", codes="INVALID_REQUEST (400), NOT_FOUND (404), INTERNAL (500),", signed_in=True)
page_post("security/passkeys/remove", "securityPasskeyRemoveSubmit", "Remove a passkey (form)", "Signed in within `accounts.recent_sign_in`, in a two-factor session: `id`.", ["id"], ["id"],
  ok200="The security page with a notice or the error.", ok303="Not signed in: to the login page.", codes="REAUTH_REQUIRED, MFA_REQUIRED (403), NOT_FOUND (404), INTERNAL (500),", signed_in=True)
page_post("devices/revoke", "devicesRevokeSubmit", "End a session (form)", "Signed in by the access cookie, or by the refresh cookie when the access token expired on a page left open.", ["session"], ["session"],
  ok303="To the devices page; to the signed-out page (token cookies cleared) when the current session ended or nobody is signed in.", codes="UNAUTHENTICATED, TOKEN_EXPIRED (401), USER_BLOCKED (403), INTERNAL (500),", signed_in=True)
page_post("logout", "logoutSubmit", "Sign out (form)", "Ends this session (`all=1`: every session), by the access cookie or the refresh cookie.", ["all"], [],
  ok303="To the signed-out page with the token cookies cleared (to the devices page if the current session was not among those ended).", codes="UNAUTHENTICATED, TOKEN_EXPIRED (401), USER_BLOCKED (403), INTERNAL (500),", signed_in=True)

doc = {
  "openapi": "3.1.0",
  "info": {
    "title": "authgate",
    "version": "0.1.0",
    "summary": "The endpoints the authgate authentication gateway answers itself.",
    "description": "Accounts, sessions, administration, forward-auth and hosted pages under the auth prefix (`/auth` by default, `server.auth_prefix`), and the operational endpoints. Every other request is matched against the configured routes and proxied (not described here).\n\n"
      "Every JSON answer uses one envelope: `{\"status\":\"success\",\"message\":...,\"data\":...}` or `{\"status\":\"error\",\"code\":...,\"message\":...,\"fields\":{...}}` (`fields` only on validation errors and ALREADY_EXISTS). Every 429 and 503 carries `Retry-After`; 429 RATE_LIMITED also the `RateLimit-*` headers.\n\n"
      "Before routing, every request is checked: header count and size (431 HEADERS_TOO_LARGE), an upper-case method, a well-formed Host, and a normalizable path (400 INVALID_REQUEST). Every answer of the gateway's own has `X-Request-Id`, `Cache-Control: no-store` (unless stated), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, and over HTTPS `Strict-Transport-Security`. Refusals 429/503 of the auth endpoints are held back up to `rate_limit.refusal_delay`.\n\n"
      "Signed-in requests present the access token as `Authorization: Bearer` or by the `__Host-authgate-access` cookie (`__Secure-authgate-access` when `server.cookie_domain` is set); a cookie-authenticated POST/PATCH/PUT/DELETE must come from the gateway's origin (`Sec-Fetch-Site: same-origin`/`none`, or a matching `Origin`), else 403 FORBIDDEN.",
  },
  "servers": [{"url": "/"}],
  "tags": [
    {"name": "account", "description": "Registration, verification, sign-in, password, profile."},
    {"name": "session", "description": "Refresh, sign-out, devices."},
    {"name": "mfa", "description": "Second factors: authenticator apps (TOTP), recovery codes, the second step of a sign-in, step-up."},
    {"name": "admin", "description": "Administration (role `admin`)."},
    {"name": "forward-auth", "description": "Doors for nginx auth_request, Traefik ForwardAuth, Caddy forward_auth, ingress-nginx auth-url."},
    {"name": "pages", "description": "Hosted HTML pages (no JavaScript needed; one first-party script for passkeys)."},
    {"name": "ops", "description": "Liveness, readiness, metrics."},
    {"name": "keys", "description": "Public keys and this document."},
  ],
  "paths": dict(sorted(paths.items())),
  "components": {
    "schemas": schemas,
    "headers": headers,
    "responses": responses_c,
    "parameters": params_c,
    "securitySchemes": {
      "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "The access token (JWT) as `Authorization: Bearer`."},
      "cookieAuth": {"type": "apiKey", "in": "cookie", "name": "__Host-authgate-access", "description": "The access token in the `__Host-authgate-access` cookie (`__Secure-authgate-access` with `server.cookie_domain`)."},
      "resetToken": {"type": "http", "scheme": "bearer", "bearerFormat": "prt1 reset token", "description": "A password reset token (`prt1.`...) from POST /auth/password/reset/verify or /auth/verify, as `Authorization: Bearer`."},
    },
  },
}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "http", "openapi.json")
with open(OUT, "w") as f:
    json.dump(doc, f, indent=2, ensure_ascii=False)
    f.write("\n")
nops = sum(len(v) for v in paths.values())
print("paths", len(paths), "ops", nops)
