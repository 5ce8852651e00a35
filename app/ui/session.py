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
from datetime import timedelta

from itsdangerous import BadSignature, TimestampSigner

from app.auth.tokens import API_TOKEN_NAME, LOCAL, Caller, TokensFileInvalid, token_digest, token_file
from app.config import Settings
from app.core import clock
from app.core.clock import TIME_FORMAT
from app.store import Database

COOKIE = "ec2cl_session"
KV_KEY = "ui_session_secret"  # where the generated one is kept
ENDED = "ui_session_ended:"  # + a session id: logged out (the value: when the cookie would have expired)


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
    """Issues and reads session cookies. A cookie names a person, a role, a session id and a fingerprint of the
    token they logged in with (an HMAC of its hash, not the token): a changed token (API_TOKEN rotated, a person's
    hash replaced in API_TOKENS_FILE) ends the sessions made with the old one, as a revoked person or role does.
    Logging out ends the session on the server too (its id is kept, ended, in the store until it would have
    expired), so a copy of the cookie no longer works."""

    def __init__(self, settings: Settings, secret: str, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db
        self.max_age = int(settings.ui_session_hours * 3600)
        self._signer = TimestampSigner(secret, salt="ec2cl-ui-session")
        self._csrf_key = hashlib.sha256(f"csrf:{secret}".encode()).digest()
        self._print_key = hashlib.sha256(f"token:{secret}".encode()).digest()

    def issue(self, caller: Caller, token: str = "") -> str:
        """A new session's cookie value (`token`: what they logged in with; none without tokens)."""
        body = {"n": caller.name, "r": caller.role, "s": secrets.token_urlsafe(16),
                "t": self._fingerprint(token_digest(token)) if token else ""}
        return self._signer.sign(json.dumps(body, separators=(",", ":")).encode()).decode()

    def read(self, value: str | None) -> UiSession | None:
        """The session a cookie names, if its signature holds, it has not expired or been logged out, and its
        person still has the same token with that role; else None."""
        if not value:
            return None
        try:
            data = json.loads(self._signer.unsign(value, max_age=self.max_age))
            name, role, sid, printed = data["n"], data["r"], str(data["s"]), str(data.get("t", ""))
        except (BadSignature, ValueError, KeyError, TypeError, AttributeError):
            return None
        caller = self._still_valid(name, role, printed)
        if caller is None or (self.db is not None and self.db.kv_get(ENDED + sid) is not None):
            return None
        return UiSession(caller, sid, self.csrf_for(sid))

    def end(self, session: UiSession) -> None:
        """Log out: this session id no longer reads, on any replica (kept until the cookie would have expired)."""
        if self.db is None:
            return
        now = clock.now()
        self.db.kv_set(ENDED + session.sid, (now + timedelta(seconds=self.max_age)).strftime(TIME_FORMAT))
        self.db.kv_delete_expired(ENDED, now.strftime(TIME_FORMAT))

    def csrf_for(self, sid: str) -> str:
        return hmac.new(self._csrf_key, sid.encode(), hashlib.sha256).hexdigest()

    def _fingerprint(self, digest: bytes) -> str:
        return hmac.new(self._print_key, digest, hashlib.sha256).hexdigest()[:32]

    def _still_valid(self, name: str | None, role: str, printed: str) -> Caller | None:
        settings = self.settings
        if not settings.auth_configured:
            return LOCAL if name is None else None
        if name == API_TOKEN_NAME and settings.api_token is not None:
            current = self._fingerprint(token_digest(settings.api_token.get_secret_value()))
            return Caller(API_TOKEN_NAME, "admin") if role == "admin" and hmac.compare_digest(printed, current) \
                else None
        if settings.api_tokens_file is None or name is None:
            return None
        try:
            users = token_file(settings.api_tokens_file, settings.reserved_user_names).users()
        except TokensFileInvalid:
            return None
        user = next((u for u in users if u.name == name and u.role == role), None)
        if user is None or not hmac.compare_digest(printed, self._fingerprint(user.sha256)):
            return None
        return Caller(user.name, user.role)
