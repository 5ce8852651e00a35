"""The dashboard's session cookie and CSRF token, in process with a real SQLite store (no browser)."""

import hashlib
import time

import pytest

from app.auth.tokens import LOCAL, Caller
from app.config import Settings
from app.store import Database
from app.ui.session import Sessions, session_secret


def settings_with(tmp_path, people: dict[str, str] | None = None, **extra) -> Settings:
    tokens = {}
    if people is not None:
        path = tmp_path / "tokens.toml"
        path.write_text("".join(f'[[users]]\nname = "{n}"\nsha256 = "{hashlib.sha256(n.encode()).hexdigest()}"\n'
                                f'role = "{r}"\n\n' for n, r in people.items()))
        tokens = {"api_tokens_file": path}
    return Settings(_env_file=None, database_url=str(tmp_path / "ui.db"), **tokens, **extra)  # type: ignore[call-arg]


@pytest.fixture
def db(tmp_path):
    store = Database(tmp_path / "ui.db")
    store.migrate()
    yield store
    store.dispose()


def test_the_generated_secret_is_kept_in_the_store_and_shared_and_the_setting_wins(tmp_path, db):
    settings = settings_with(tmp_path)
    first = session_secret(settings, db)
    assert len(first) >= 32 and session_secret(settings, db) == first  # a second replica, a restart: the same
    assert session_secret(settings_with(tmp_path, ui_session_secret="s" * 32), db) == "s" * 32


def test_a_login_reads_back_and_a_tampered_or_foreign_cookie_does_not(tmp_path, db):
    settings = settings_with(tmp_path, {"alice": "user", "root": "admin"})
    sessions = Sessions(settings, session_secret(settings, db), db)
    cookie = sessions.issue(Caller("alice", "user"), "alice")
    session = sessions.read(cookie)
    assert session is not None and session.caller == Caller("alice", "user")
    assert hashlib.sha256(b"alice").hexdigest() not in cookie and len(session.csrf) == 64
    assert sessions.read(cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB")) is None
    assert Sessions(settings, "another-secret-0123456789abcdef0123").read(cookie) is None
    other = sessions.read(sessions.issue(Caller("alice", "user"), "alice"))
    assert other is not None and other.csrf != session.csrf  # a CSRF token per session


def test_a_revoked_or_demoted_person_and_an_expired_cookie_end_the_session(tmp_path, db, monkeypatch):
    settings = settings_with(tmp_path, {"alice": "user", "root": "admin"}, ui_session_hours=1)
    sessions = Sessions(settings, session_secret(settings, db), db)
    alice, root = sessions.issue(Caller("alice", "user"), "alice"), sessions.issue(Caller("root", "admin"), "root")
    settings_with(tmp_path, {"root": "user"})  # alice revoked, root now a user
    assert sessions.read(alice) is None and sessions.read(root) is None
    settings_with(tmp_path, {"alice": "user"})
    assert sessions.read(alice) is not None
    later = time.time() + 3601
    monkeypatch.setattr("itsdangerous.timed.time.time", lambda: later)
    assert sessions.read(alice) is None  # UI_SESSION_HOURS passed


def test_without_tokens_the_session_is_the_local_user_and_a_named_one_is_refused(tmp_path, db):
    settings = settings_with(tmp_path)
    sessions = Sessions(settings, session_secret(settings, db))
    session = sessions.read(sessions.issue(LOCAL))
    assert session is not None and session.caller == LOCAL
    assert sessions.read(sessions.issue(Caller("alice", "user"))) is None


def test_a_rotated_token_and_a_log_out_end_the_session_even_for_a_copy_of_the_cookie(tmp_path, db):
    settings = settings_with(tmp_path, {"alice": "user"})
    sessions = Sessions(settings, session_secret(settings, db), db)
    cookie = sessions.issue(Caller("alice", "user"), "alice")
    path = settings.api_tokens_file
    assert path is not None
    path.write_text(path.read_text().replace(hashlib.sha256(b"alice").hexdigest(),
                                             hashlib.sha256(b"alice-new").hexdigest()) + "\n")
    assert sessions.read(cookie) is None  # same name and role, another token: a new login is needed
    fresh = sessions.issue(Caller("alice", "user"), "alice-new")
    session = sessions.read(fresh)
    assert session is not None
    sessions.end(session)
    assert sessions.read(fresh) is None
    assert Sessions(settings, session_secret(settings, db), db).read(fresh) is None  # another replica too
    api = settings_with(tmp_path, api_token="a" * 20)
    admin = Sessions(api, session_secret(api, db), db)
    assert admin.read(admin.issue(Caller("admin", "admin"), "a" * 20)) is not None
    rotated = settings_with(tmp_path, api_token="b" * 20)
    assert Sessions(rotated, session_secret(rotated, db), db).read(admin.issue(Caller("admin", "admin"), "a" * 20)) \
        is None
