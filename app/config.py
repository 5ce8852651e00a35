"""One settings class, read from the environment (and `.env`), validated at start."""

import ipaddress
import os
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Annotated, ClassVar, Literal
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AwareDatetime,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "aws_cli_bash_scripts"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:5055"
DEFAULT_PRICES_FILE = REPO_ROOT / "app" / "data" / "prices.json"
API_TOKEN_NAME = "admin"  # noqa: S105 - API_TOKEN's person (an admin), not a secret


EMAIL = re.compile(r"[^@\s,<>]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def uvicorn_option(name: str, default: str, argv: list[str] | None = None) -> str:
    """uvicorn's --NAME from its command line (--NAME VALUE or --NAME=VALUE), else UVICORN_NAME, else its default."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return os.environ.get(f"UVICORN_{name.upper()}", default)


def served_url(argv: list[str] | None = None) -> str:
    """This server's base URL as uvicorn was told to listen (`make run PORT=8080`: http://127.0.0.1:8080); a
    wildcard address (0.0.0.0, ::) is reached on this host as 127.0.0.1."""
    host = uvicorn_option("host", "127.0.0.1", argv)
    port = uvicorn_option("port", "8000", argv)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None  # a name, like localhost
    if address is not None and address.is_unspecified:
        host = "127.0.0.1"
    elif address is not None and address.version == 6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


class SettingsConflict(ValueError):
    """Settings that do not go together. Raised by a model validator, whose error has no field (loc), so it
    carries the variables it concerns: config_problems names them. `more`: further problems of the same check."""

    def __init__(self, names: tuple[str, ...], message: str,
                 more: list[tuple[tuple[str, ...], str]] | None = None) -> None:
        self.problems = [(names, message), *(more or [])]
        super().__init__("; ".join(text for _, text in self.problems))


# A check of settings that needs a domain's knowledge (a file's format, the event names): the problems found,
# each as (the variables it concerns, a message). The wiring (app/lifespan.py) installs the domains' checks
# in Settings.checks, so this module imports no domain.
SettingsCheck = Callable[["Settings"], list[tuple[tuple[str, ...], str]]]


class Settings(BaseSettings):
    """Every knob of the service. A bad value stops the server at start with a clear message."""

    checks: ClassVar[tuple[SettingsCheck, ...]] = ()

    # hide_input_in_errors: a ValidationError's text (a traceback's) never repeats a value, which may be a secret;
    # config_problems shows the values that are not.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False,
                                      hide_input_in_errors=True)

    aws_region: str | None = None
    aws_default_region: str | None = None
    # Credentials and profile: read here (from the environment or .env) and handed to every `aws` child.
    aws_profile: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    ec2_endpoint_url: str | None = None
    ec2_target: Literal["sandbox", "aws"] | None = None
    key_name: str = Field("my_ec2_keypair", pattern=r"^[\x20-\x7e]{1,255}$")
    ssh_key_path: str = "~/.ssh/my_ec2_keypair.pem"
    database_url: str = "./data/instances.db"
    # The store's pool: at most pool + overflow connections at once (each replica, besides its leadership and
    # lock sessions on PostgreSQL).
    database_pool_size: int = Field(5, ge=1, le=100)
    database_max_overflow: int = Field(5, ge=0, le=100)
    backend: str = "awscli"
    reconcile_interval_seconds: float = Field(30.0, gt=0, le=86400)
    allowed_instance_types: Annotated[list[str], NoDecode] = ["t3.micro", "t4g.micro"]
    free_tier_amis: Annotated[list[str], NoDecode] = []
    ssh_ingress_cidr: str = "0.0.0.0/0"
    # Where `ssh_from: my_ip` learns this host's public IPv4 (None: checkip.amazonaws.com, or in the sandbox
    # the address the request came from).
    my_ip_url: str | None = Field(None, pattern=r"^https?://[!-~]{1,2000}$")
    aws_cli: str = "aws"
    aws_cli_timeout_seconds: float = Field(60.0, gt=0, le=3600)
    aws_cli_connect_timeout: int = Field(5, ge=1, le=3600)
    aws_cli_read_timeout: int = Field(30, ge=1, le=3600)
    max_aws_processes: int = Field(8, ge=1, le=64)
    # Starts, stops and deletes of one kind arriving within this window go out as one `aws` call.
    transition_window_ms: int = Field(25, ge=0, le=1000)
    ami_catalog_ttl_hours: float = Field(24.0, gt=0)
    api_token: SecretStr | None = None
    # One token per person (app/auth/tokens.py): name, SHA-256 of the token, role; re-read when it changes.
    api_tokens_file: Path | None = None
    # Opens GET /metrics to a scraper holding this token (API_TOKEN works too).
    metrics_token: SecretStr | None = None
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = Field(65536, ge=1024, le=10 * 1024 * 1024)
    # EC2 is eventually consistent: "gone" and "never launched" are concluded only after this long
    # (and, for a tracked instance, this many consecutive sweeps that did not see it).
    consistency_grace_seconds: float = Field(120.0, ge=0, le=86400)
    gone_after_missed_sweeps: int = Field(2, ge=1, le=100)
    events_retention_days: float = Field(90.0, gt=0, le=36500)
    # The spend guard: what may be committed per calendar month (UTC), priced from PRICES_FILE.
    budget_usd: float = Field(5.0, gt=0, le=1_000_000)
    # The budget with EC2_TARGET=sandbox when BUDGET_USD is set neither in the environment nor in .env: the
    # emulator's instances cost nothing, and 5 USD of pretend spending refused every create after about seven.
    sandbox_budget_usd: float = Field(100.0, gt=0, le=1_000_000)
    default_auto_stop_minutes: int | None = Field(480, ge=1, le=10080)
    # At a month's start, and whenever committed spend passes BUDGET_USD otherwise: stop the newest runs until
    # it fits (stop), or only say so (notify).
    budget_enforcement: Literal["stop", "notify"] = "stop"
    prices_file: Path = DEFAULT_PRICES_FILE
    # Notifications (app/notifications/service.py): email through SMTP, other channels as Apprise URLs.
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_from: str | None = None
    notify_email_to: Annotated[list[str], NoDecode] = []
    notify_urls: Annotated[list[SecretStr], NoDecode] = []
    notify_events: Annotated[list[str], NoDecode] = []
    auto_stop_warning_minutes: int = Field(15, ge=0, le=1440)
    schedule_tick_seconds: float = Field(30.0, ge=1, le=3600)
    # The web dashboard (/ui): how long a login lasts, and what signs its cookie (unset: a secret kept in the store).
    ui_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    ui_session_secret: SecretStr | None = Field(None, min_length=32)
    notify_retry_max_seconds: float = Field(300.0, ge=1, le=86400)
    # Unset: this server's own address, as uvicorn was told to listen (served_url).
    notify_api_url: str = ""
    # Tests only (app/core/clock.py): the service's clock starts at this UTC time and runs from there.
    clock_start: AwareDatetime | None = None

    # Where the budget in force comes from, for the start-up line (budget_from).
    _budget_from: str = PrivateAttr("BUDGET_USD's default")

    _split = field_validator("allowed_instance_types", "free_tier_amis", "notify_email_to", "notify_events",
                             mode="before")(_split_csv)

    @field_validator("notify_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        """Comma-separated, but a comma inside a URL (`?to=a,b`) stays: split only before a scheme."""
        if isinstance(value, str):
            return [part.strip() for part in re.split(r"[,\s]+(?=[A-Za-z][A-Za-z0-9+.-]*://)", value) if part.strip()]
        return value

    @field_validator("smtp_host", "smtp_username", "smtp_from", "smtp_password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("smtp_host")
    @classmethod
    def _smtp_host(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\]", value):
            raise ValueError(f"must be a host name or address like smtp.gmail.com, got {value!r}")
        return value

    @field_validator("smtp_from")
    @classmethod
    def _from_address(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL.fullmatch(value):
            raise ValueError(f"must be an email address like alerts@example.com, got {value!r}")
        return value

    @field_validator("notify_email_to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not EMAIL.fullmatch(a)]
        if bad:
            raise ValueError(f"must be a comma list of email addresses, got {bad}")
        return value

    @field_validator("notify_api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if value == "":
            return value  # unset: this server's own address (see _combinations)
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"must be the API's base URL like http://127.0.0.1:8000, got {value!r}")
        return value.rstrip("/")

    @field_validator("default_auto_stop_minutes", mode="before")
    @classmethod
    def _never(cls, value: object) -> object:
        return None if value in ("", "never", "none", "null") else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty; give a SQLite file path or a postgresql://user:password@host:port/db URL")
        if value.startswith(("postgresql://", "postgres://")):
            try:
                conninfo_to_dict(value)
            except psycopg.ProgrammingError as exc:
                raise ValueError(f"is not a PostgreSQL URL psycopg can use ({_hide_password(str(exc), value)}); "
                                 "the form is "
                                 "postgresql://user:password@host:port/database") from None
        elif "://" in value and not value.startswith("sqlite:///"):
            raise ValueError("names an engine this service does not speak; use a SQLite file path (or "
                             "sqlite:///path) or postgresql://user:password@host:port/database")
        return value

    @field_validator("prices_file")
    @classmethod
    def _prices_path(cls, value: Path) -> Path:
        return value.expanduser()  # its content: app/budget/spending.py's settings check

    @field_validator("backend")
    @classmethod
    def _backend_supported(cls, value: str) -> str:
        if value != "awscli":
            raise ValueError(f"BACKEND={value!r} is not supported; the only backend is 'awscli'")
        return value

    @field_validator("allowed_instance_types")
    @classmethod
    def _types_look_right(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not re.fullmatch(r"[a-z][a-z0-9-]*\.[a-z0-9]+", t)]
        if bad or not value:
            raise ValueError(f"ALLOWED_INSTANCE_TYPES must list instance types like t3.micro, got {bad or value}")
        return value

    @field_validator("free_tier_amis")
    @classmethod
    def _amis_look_right(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if not re.fullmatch(r"ami-[0-9a-f]{8,17}", a)]
        if bad:
            raise ValueError(f"FREE_TIER_AMIS must list AMI ids like ami-0123456789abcdef0, got {bad}")
        return value

    @field_validator("ssh_ingress_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.IPv4Network(value, strict=False)
        except ValueError as exc:
            raise ValueError(f"SSH_INGRESS_CIDR must be an IPv4 CIDR like 203.0.113.7/32: {exc}") from exc
        return str(net)

    @field_validator("aws_profile", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                     "aws_region", "aws_default_region", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("aws_region", "aws_default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", value):
            raise ValueError(f"must be an AWS region like us-east-1, got {value!r}")
        return value

    @field_validator("api_token", "metrics_token", mode="before")
    @classmethod
    def _token(cls, value: object, info: ValidationInfo) -> object:
        if value in (None, ""):
            return None
        if isinstance(value, str) and (len(value) < 16 or not value.isprintable() or " " in value):
            name = (info.field_name or "api_token").upper()
            raise ValueError(f"{name} must be at least 16 printable characters without spaces "
                             "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("api_tokens_file", mode="before")
    @classmethod
    def _no_tokens_file(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_tokens_file")
    @classmethod
    def _tokens_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser()
        # Absolute, but its symlinks NOT resolved: the server watches the path as given, so a re-pointed link (a
        # release symlink, a Kubernetes ConfigMap's ..data swap) is followed to the file it names now.
        return Path(os.path.abspath(path))

    @field_validator("ec2_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("EC2_ENDPOINT_URL must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _combinations(self) -> "Settings":
        """Settings that only make sense together; every problem is reported, each naming its variables."""
        problems = [problem for check in type(self).checks for problem in check(self)]
        if self.notify_email_to and not (self.smtp_host and self.smtp_from):
            problems.append((("NOTIFY_EMAIL_TO", "SMTP_HOST", "SMTP_FROM"), "NOTIFY_EMAIL_TO is set: SMTP_HOST and "
                             "SMTP_FROM are needed to send it mail"))
        if self.smtp_host and not self.notify_email_to:
            problems.append((("SMTP_HOST", "NOTIFY_EMAIL_TO"),
                             "SMTP_HOST is set but NOTIFY_EMAIL_TO is empty: say who gets the mail"))
        if bool(self.smtp_username) != bool(self.smtp_password):
            problems.append((("SMTP_USERNAME", "SMTP_PASSWORD"),
                             "SMTP_USERNAME and SMTP_PASSWORD go together: set both or neither"))
        if self.ec2_target == "aws" and self.ec2_endpoint_url:
            problems.append((("EC2_TARGET", "EC2_ENDPOINT_URL"),
                             "EC2_TARGET=aws but EC2_ENDPOINT_URL is set; unset one of them"))
        if problems:
            raise SettingsConflict(*problems[0], more=problems[1:])
        if self.ec2_target == "sandbox" and not self.ec2_endpoint_url:
            self.ec2_endpoint_url = DEFAULT_SANDBOX_URL
        if not self.notify_api_url:
            self.notify_api_url = served_url()
        if "budget_usd" in self.model_fields_set:  # given: in the environment, .env or as an argument
            self._budget_from = "BUDGET_USD"
        elif self.ec2_target == "sandbox":
            self.budget_usd, self._budget_from = self.sandbox_budget_usd, "SANDBOX_BUDGET_USD, BUDGET_USD unset"
        return self

    @property
    def auth_configured(self) -> bool:
        """Whether requests must carry a token (API_TOKEN, API_TOKENS_FILE or both): else only loopback is served."""
        return self.api_token is not None or self.api_tokens_file is not None

    @property
    def reserved_user_names(self) -> frozenset[str]:
        """Names the tokens file may not use: API_TOKEN's admin, when it is set."""
        return frozenset({API_TOKEN_NAME}) if self.api_token is not None else frozenset()

    @property
    def region(self) -> str:
        return self.aws_region or self.aws_default_region or "us-east-1"

    @property
    def endpoint_key(self) -> str:
        """Which EC2 an instance belongs to, besides its region: the endpoint, '' for real AWS."""
        return self.ec2_endpoint_url or ""

    @property
    def target_label(self) -> str:
        """SANDBOX when an emulator endpoint is set, AWS otherwise."""
        return "SANDBOX" if self.ec2_endpoint_url else "AWS"

    @property
    def budget_from(self) -> str:
        """Which setting gave budget_usd: BUDGET_USD (set), its default, or SANDBOX_BUDGET_USD (EC2_TARGET=sandbox
        without BUDGET_USD)."""
        return self._budget_from

    @property
    def database_is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @property
    def database_path(self) -> Path:
        url = self.database_url
        if url.startswith("sqlite:///"):
            url = url[len("sqlite:///") :]
        path = Path(url).expanduser()
        return path if path.is_absolute() else Path.cwd() / path


def _url_passwords(url: str) -> list[str]:
    """Every form the password of a database URL may take in a message: as written in the authority (up to the
    first '@' as libpq reads it, or the last, as its writer may have meant it) and as password= parameters, each
    also percent-decoded. Longest first."""
    rest = url.split("://", 1)[-1]
    authority = rest.split("?", 1)[0]
    found: list[str] = []
    for end in (authority.find("@"), authority.rfind("@")):
        if end > 0 and ":" in authority[:end]:
            found.append(authority[:end].split(":", 1)[1])
    found += re.findall(r"(?:^|[?&])password=([^&]*)", rest.partition("?")[2], flags=re.IGNORECASE)
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def redact_url(url: str) -> str:
    """A database URL fit for a log line: the password (in the authority or as a parameter) replaced by ***."""
    url = re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def _hide_password(message: str, url: str) -> str:
    """A message about a database URL (psycopg's, which quotes the token it stumbled on) without its password:
    a quoted token holding it becomes "***" (a quoted URL: that URL redacted), and so does any other copy."""
    secrets = _url_passwords(url)

    def quoted(match: re.Match[str]) -> str:
        token = match.group(1)
        if not any(secret in token for secret in secrets):
            return match.group(0)
        return f'"{redact_url(token)}"' if "://" in token else '"***"'

    message = re.sub(r'"([^"]*)"', quoted, message)
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


def config_problems(exc: ValidationError) -> list[str]:
    """A settings ValidationError as one line per problem, each naming its variable: `NAME: problem`.

    A field's error names its field; one about several settings together (a SettingsConflict, raised by a model
    validator, whose error has no loc) names the variables it carries. Pydantic's "Value error, " goes."""
    lines: list[str] = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, SettingsConflict):
            lines += [_problem(names, message) for names, message in cause.problems]
            continue
        loc = error["loc"]
        names = (str(loc[0]).upper(),) if loc else ("SETTINGS",)
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if len(loc) > 1:
            message = f"(item {'.'.join(map(str, loc[1:]))}) {message}"
        if error["type"] != "value_error" and loc and not _secret(str(loc[0])):
            message += f" (got {error['input']!r})"  # our own messages (value_error) say it where it helps
        lines.append(_problem(names, message))
    return lines


def _secret(field: str) -> bool:
    """A value never to repeat in a message: a SecretStr field (or a list of them), or no known field."""
    info = Settings.model_fields.get(field)
    return info is None or "SecretStr" in repr(info.annotation)


def _problem(names: tuple[str, ...], message: str) -> str:
    """`NAME: message`, or the message alone when it starts by naming one of its variables; always one line."""
    message = " ".join(message.split())
    if any(re.match(rf"{re.escape(name)}\b", message) for name in names):
        return message
    return f"{', '.join(names)}: {message}"


def describe_errors(exc: ValidationError) -> str:
    """A settings ValidationError as one line: `NAME: problem; NAME: problem`."""
    return "; ".join(config_problems(exc))


@lru_cache
def get_settings() -> Settings:
    return Settings()


def load_settings() -> Settings:
    """The settings, or SystemExit with one line per problem, each naming its variable."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise SystemExit("\n".join(f"ec2-creator-local: bad configuration: {line}"
                                   for line in config_problems(exc))) from None
