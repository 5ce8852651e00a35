"""Where the API is and which token to send: profiles in ~/.config/ec2cl/config.toml (platformdirs' user config
directory), overridden by EC2CL_URL, EC2CL_TOKEN and EC2CL_PROFILE.

    [profiles.default]
    url = "http://127.0.0.1:8000"
    token = "..."
"""

import json
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import platformdirs

from ec2cl.errors import USAGE, CliError

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_PROFILE = "default"


def config_path() -> Path:
    return Path(platformdirs.user_config_dir("ec2cl", appauthor=False)) / "config.toml"


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    token: str | None
    path: Path
    warnings: tuple[str, ...] = ()


def _read(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", USAGE, "bad_config") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path} is not valid TOML: {exc}", USAGE, "bad_config") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise CliError(f"{path}: [profiles.<name>] tables with url and token expected", USAGE, "bad_config")
    return profiles


def shown(url: str) -> str:
    """The URL as messages show it: without a user or password in it."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except (httpx.InvalidURL, TypeError):
        return "(the URL)"


def load(profile: str | None = None, environ: Mapping[str, str] = os.environ, new: bool = False) -> Profile:
    """The profile asked for (--profile, else EC2CL_PROFILE, else "default"), with EC2CL_URL and EC2CL_TOKEN
    taking precedence over what it holds. Naming a profile the file lacks is a usage error (unless `new`: login
    adds it); the default one may be missing (then the default URL and no token)."""
    path = config_path()
    name = profile or environ.get("EC2CL_PROFILE") or DEFAULT_PROFILE
    profiles = _read(path)
    if name not in profiles and name != DEFAULT_PROFILE and not new:
        known = ", ".join(sorted(profiles)) or "none"
        raise CliError(f"no profile {name!r} in {path} (profiles: {known}); `ec2cl --profile {name} login` adds "
                       "it", USAGE, "unknown_profile")
    entry = profiles.get(name, {})
    url = environ.get("EC2CL_URL") or entry.get("url") or DEFAULT_URL
    token = environ.get("EC2CL_TOKEN") or entry.get("token") or None
    check_url(url)
    if token is not None and not new and not PRINTABLE.fullmatch(str(token)):  # (login replaces it)
        raise CliError("the token (EC2CL_TOKEN, or the profile's) holds characters an HTTP header cannot carry "
                       "(a line end, a non-ASCII letter): give it as one line of printable ASCII", USAGE,
                       "bad_token")
    warnings = []
    if entry.get("token") and path.stat().st_mode & 0o077:
        warnings.append(f"{path} holds a token and others may read it: chmod 600 {path}")
    return Profile(name, url.rstrip("/"), token if isinstance(token, str) else None, path, tuple(warnings))


PRINTABLE = re.compile(r"[\x21-\x7e]+")


def check_url(url: object) -> None:
    """An http(s) URL httpx can use, else a usage error."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise CliError(f"the API URL must start with http:// or https://, not {url!r}", USAGE, "bad_config")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CliError(f"the API URL {shown(url)!r} cannot be used: {exc}", USAGE, "bad_config") from None


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string, once DEL (which JSON leaves as is) is escaped too.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def save(name: str, url: str, token: str) -> Path:
    """Write the profile (the others kept) to the config file, mode 0600 from its first byte (the directory 0700);
    the file is replaced whole, so a reader never sees half of it."""
    path = config_path()
    profiles = _read(path)
    profiles[name] = {**profiles.get(name, {}), "url": url, "token": token}
    lines = ["# ec2cl's profiles (written by `ec2cl login`; mode 0600: it holds tokens)."]
    for key, entry in profiles.items():
        lines.append(f"\n[profiles.{_toml_string(key)}]")
        lines += [f"{field} = {_toml_string(str(value))}" for field, value in entry.items()]
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config.", suffix=".toml")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        os.chmod(temporary, stat.S_IRUSR | stat.S_IWUSR)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
