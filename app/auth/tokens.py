"""One token per person: API_TOKENS_FILE names each person, the SHA-256 of their token (never the token)
and their role; a bearer token becomes a Caller. Standard library only: scripts/add_user.sh checks the
file with this module before it appends to it.

The file, TOML or JSON by its extension:

    [[users]]                                  {"users": [
    name = "alice"                               {"name": "alice", "sha256": "<64 hex>", "role": "user"}
    sha256 = "<64 hex digits>"                 ]}
    role = "user"  # or "admin"

It is read at start (a bad file stops the server) and again whenever it changes (checked once per
authenticated request: the modification time, size or inode of the file the path names now, or where its
symlinks lead), so `scripts/add_user.sh` needs no restart. The path is watched as given, never resolved once:
a re-pointed symlink (a release link, a Kubernetes ConfigMap's `..data` swap) is followed to its new file. A
file that goes bad while the server runs shuts its people out (503 tokens_file_invalid, the reason in
the log) until it is fixed: a half-made revocation must never leave the revoked token working.
"""

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.config import API_TOKEN_NAME, Settings

log = logging.getLogger("ec2_creator.users")

Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")
NAME = re.compile(r"[a-z0-9._-]{1,64}")
SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
FIELDS = {"name", "sha256", "role"}
# Who API_TOKEN is: the single admin of a server configured the old way (and next to a tokens file).


@dataclass(frozen=True)
class Caller:
    """Who sent a request. name None: the local single user of a server with no token configured."""

    name: str | None
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner: str | None) -> bool:
        """An admin sees every instance; a user their own (an instance with no owner is an admin's)."""
        return self.is_admin or (owner is not None and owner == self.name)

    def may_replay(self, launch_owner: str | None) -> bool:
        """Whether an Idempotency-Key held by a launch of `launch_owner` is this caller's to replay: their own;
        for an admin, also one of no owner (kept before tokens per person, or by a server without tokens).
        The same rule as Database.claim_launch."""
        return launch_owner == self.name or (self.is_admin and launch_owner is None)

    @property
    def only_owner(self) -> str | None:
        """The owner a listing is narrowed to: a user's name; None (everything) for an admin."""
        return None if self.is_admin else self.name


# A server with neither API_TOKEN nor API_TOKENS_FILE: its one local user may do everything; what it
# creates has no owner (so once tokens are configured, only admins see it).
LOCAL = Caller(None, "admin")


@dataclass(frozen=True)
class User:
    name: str
    sha256: bytes  # the digest of the token
    role: Role


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_users(doc: Any, source: str, reserved: Iterable[str] = ()) -> list[User]:
    """The people of a parsed tokens file; a ValueError names the first problem (never a hash)."""
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: must hold a table (TOML) or an object (JSON) with a \"users\" list")
    unknown = sorted(set(doc) - {"users"})
    if unknown:
        raise ValueError(f"{source}: unknown top-level keys {unknown}; only \"users\" is read")
    entries = doc.get("users", [])
    if not isinstance(entries, list):
        raise ValueError(f"{source}: \"users\" must be a list ([[users]] tables in TOML)")
    reserved = set(reserved)
    users: list[User] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{source}: user {number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a table with name, sha256 and role")
        missing, extra = sorted(FIELDS - set(entry)), sorted(set(entry) - FIELDS)
        if missing or extra:
            raise ValueError(f"{where}: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown keys {extra}"] if extra else [])))
        name, digest, role = entry["name"], entry["sha256"], entry["role"]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"{where}: name must be 1-64 of a-z 0-9 . _ -, got {name!r}")
        where = f"{source}: user {name!r}"
        if name in names:
            raise ValueError(f"{where} is named twice")
        if name in reserved:
            raise ValueError(f"{where}: the name {name!r} is API_TOKEN's (the admin it stands for); choose another")
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
            raise ValueError(f"{where}: sha256 must be 64 hex digits (the SHA-256 of the token, never the token)")
        if role not in ROLES:
            raise ValueError(f"{where}: role must be admin or user, got {role!r}")
        raw = bytes.fromhex(digest)
        if raw in digests:
            raise ValueError(f"{where} has the same token hash as {digests[raw]!r}: each person needs their own token")
        names.add(name)
        digests[raw] = name
        users.append(User(name, raw, role))
    return users


def load_users(path: Path, reserved: Iterable[str] = ()) -> list[User]:
    """Read a tokens file (.toml or .json); a ValueError says what is wrong with it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"{path}: must end with .toml or .json (that is how its format is known)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"{path}: cannot be read ({reason})") from None
    try:
        doc = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: is not valid {suffix[1:].upper()} ({exc})") from None
    return parse_users(doc, str(path), reserved)


class TokensFileInvalid(Exception):
    """The tokens file went bad (or away) while the server runs: its people are refused until it is fixed."""


Signature = tuple[str, int, int, int, int]


def _signature(path: Path) -> Signature:
    """What the path names now: where its symlinks lead, and that file's mtime, size, inode and device."""
    target = os.path.realpath(path)
    info = path.stat()  # follows the links as they are now
    return target, info.st_mtime_ns, info.st_size, info.st_ino, info.st_dev


class TokenFile:
    """API_TOKENS_FILE as last read, read again when what its path names changes (one stat per lookup)."""

    def __init__(self, path: Path, reserved: Iterable[str] = ()) -> None:
        self.path = Path(path)
        self.reserved = frozenset(reserved)
        self._lock = threading.Lock()
        self._signature: Signature | None = None
        self._users: list[User] = []
        self._error: str | None = None

    def users(self) -> list[User]:
        """The people in the file now; TokensFileInvalid when it cannot be read or is malformed."""
        with self._lock:
            signature: Signature | None = None
            error: str | None = None
            try:
                signature = _signature(self.path)
            except OSError as exc:
                error = f"{self.path}: cannot be read ({exc.strerror})"
            if signature is None or signature != self._signature:
                if error is None:
                    try:
                        users = load_users(self.path, self.reserved)
                    except ValueError as exc:
                        error = str(exc)
                    else:
                        if self._signature is not None:
                            log.info("API_TOKENS_FILE %s changed: %d people", self.path, len(users))
                        self._users = users
                if error is not None and error != self._error:
                    log.error("API_TOKENS_FILE is unusable, its tokens are refused until it is fixed: %s", error)
                self._signature, self._error = signature, error
            if self._error is not None:
                raise TokensFileInvalid(self._error)
            return self._users

    def lookup(self, token: str) -> User | None:
        """The person whose token this is: every entry is compared, in constant time."""
        digest = token_digest(token)
        found: User | None = None
        for user in self.users():
            if hmac.compare_digest(digest, user.sha256):
                found = user
        return found


_files: dict[tuple[str, frozenset[str]], TokenFile] = {}
_files_lock = threading.Lock()


def token_file(path: Path, reserved: Iterable[str] = ()) -> TokenFile:
    """The one TokenFile of a path (shared by every request of the process)."""
    key = (os.fspath(path), frozenset(reserved))
    with _files_lock:
        found = _files.get(key)
        if found is None:
            found = _files[key] = TokenFile(Path(path), key[1])
        return found


def settings_problems(settings: Settings) -> list[tuple[tuple[str, ...], str]]:
    """API_TOKENS_FILE read as requests will read it (a ValueError names what is wrong, never a hash), and beside
    API_TOKEN, the admin named "admin": the file may neither use that name nor its token. Run at start."""
    if settings.api_tokens_file is None:
        return []
    try:
        users = load_users(settings.api_tokens_file)
    except ValueError as exc:
        return [(("API_TOKENS_FILE",), str(exc))]
    if settings.api_token is None:
        return []
    names = ("API_TOKENS_FILE", "API_TOKEN")
    try:
        users = load_users(settings.api_tokens_file, reserved=settings.reserved_user_names)
    except ValueError as exc:  # only the reserved name is left
        return [(names, str(exc))]
    digest = token_digest(settings.api_token.get_secret_value())
    same = [u.name for u in users if u.sha256 == digest]
    if same:
        return [(names, f"API_TOKENS_FILE gives {same[0]!r} the token of API_TOKEN (the admin named "
                        f"{API_TOKEN_NAME!r}): each person needs their own token")]
    return []
