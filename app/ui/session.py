"""The dashboard's sessions: a signed cookie (HttpOnly, SameSite=Strict, expiring after UI_SESSION_HOURS) that names
who logged in with a token, and a CSRF token per session that every state-changing form and HTMX request carries.

The cookie is signed with UI_SESSION_SECRET, or when that is unset with a random secret kept in the store (made
once, by whichever replica gets there first), so replicas and restarts share it. It holds no token: a name, a role
and a random session id. Each request checks the name against the tokens in force (a revoked token's session
ends at its next request). Without tokens (a loopback server) there is no login: the session only carries the
CSRF token, and the API's Host/Origin guards apply to the pages as to every route.
"""

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, TimestampSigner

from app.auth.tokens import API_TOKEN_NAME, LOCAL, Caller, TokensFileInvalid, token_file
from app.config import Settings
from app.store import Database

COOKIE = "ec2cl_session"
KV_KEY = "ui_session_secret"  # where the generated one is kept


def session_secret(settings: Settings, db: Database) -> str:
    """UI_SESSION_SECRET, or the store's (made once; every replica reads the same)."""
    if settings.ui_session_secret is not None:
        return settings.ui_session_secret.get_secret_value()
    db.kv_create(KV_KEY, secrets.token_urlsafe(32))
    stored = db.kv_get(KV_KEY)
    if stored is None:
        raise RuntimeError("the dashboard's session secret could not be kept in the store")
    return stored


@dataclass(frozen=True)
class UiSession:
    caller: Caller
    sid: str
    csrf: str


class Sessions:
    def __init__(self, settings: Settings, secret: str) -> None:
        self.settings = settings
        self.max_age = int(settings.ui_session_hours * 3600)
        self._signer = TimestampSigner(secret, salt="ec2cl-ui-session")
        self._csrf_key = hashlib.sha256(f"csrf:{secret}".encode()).digest()

    def issue(self, caller: Caller) -> str:
        """A new session's cookie value."""
        body = json.dumps({"n": caller.name, "r": caller.role, "s": secrets.token_urlsafe(16)}, separators=(",", ":"))
        return self._signer.sign(body.encode()).decode()

    def read(self, value: str | None) -> UiSession | None:
        """The session a cookie names, if its signature holds, it has not expired and its person still has a
        token with that role; else None."""
        if not value:
            return None
        try:
            data = json.loads(self._signer.unsign(value, max_age=self.max_age))
            name, role, sid = data["n"], data["r"], str(data["s"])
        except (BadSignature, ValueError, KeyError, TypeError):
            return None
        caller = self._still_valid(name, role)
        return None if caller is None else UiSession(caller, sid, self.csrf_for(sid))

    def csrf_for(self, sid: str) -> str:
        return hmac.new(self._csrf_key, sid.encode(), hashlib.sha256).hexdigest()

    def _still_valid(self, name: str | None, role: str) -> Caller | None:
        settings = self.settings
        if not settings.auth_configured:
            return LOCAL if name is None else None
        if name == API_TOKEN_NAME and settings.api_token is not None:
            return Caller(API_TOKEN_NAME, "admin") if role == "admin" else None
        if settings.api_tokens_file is None or name is None:
            return None
        try:
            users = token_file(settings.api_tokens_file, settings.reserved_user_names).users()
        except TokensFileInvalid:
            return None
        user = next((u for u in users if u.name == name and u.role == role), None)
        return Caller(user.name, user.role) if user is not None else None
