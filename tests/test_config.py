"""Settings: defaults, parsing, and fail-fast on bad values (also as a real server start)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import Settings
from tests.support.configmap import publish
from tests.support.processes import ROOT, safe_env


def settings(**env) -> Settings:
    return Settings(_env_file=None, **env)


def test_defaults_match_the_docs(monkeypatch):
    for name in ("ALLOWED_INSTANCE_TYPES", "KEY_NAME", "DATABASE_URL", "BACKEND", "EC2_ENDPOINT_URL", "EC2_TARGET",
                 "RECONCILE_INTERVAL_SECONDS", "SSH_INGRESS_CIDR", "FREE_TIER_AMIS", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "MAX_AWS_PROCESSES"):
        monkeypatch.delenv(name, raising=False)
    s = settings()
    assert s.allowed_instance_types == ["t3.micro", "t4g.micro"]
    assert s.key_name == "my_ec2_keypair" and s.backend == "awscli"
    assert s.database_url == "./data/instances.db" and s.reconcile_interval_seconds == 30
    assert s.ssh_ingress_cidr == "0.0.0.0/0" and s.free_tier_amis == []
    assert s.target_label == "AWS" and s.region == "us-east-1" and s.max_aws_processes == 8


def test_lists_are_comma_separated(monkeypatch):
    monkeypatch.setenv("ALLOWED_INSTANCE_TYPES", "t3.micro, t3.small")
    monkeypatch.setenv("FREE_TIER_AMIS", "ami-0123456789abcdef0")
    s = settings()
    assert s.allowed_instance_types == ["t3.micro", "t3.small"]
    assert s.free_tier_amis == ["ami-0123456789abcdef0"]


def test_sandbox_target_defaults_the_endpoint(monkeypatch):
    monkeypatch.delenv("EC2_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("EC2_TARGET", "sandbox")
    s = settings()
    assert s.ec2_endpoint_url == "http://127.0.0.1:5055" and s.target_label == "SANDBOX"


@pytest.mark.parametrize("name, value", [
    ("BACKEND", "boto3"),
    ("ALLOWED_INSTANCE_TYPES", "not a type"),
    ("FREE_TIER_AMIS", "ami-xyz"),
    ("SSH_INGRESS_CIDR", "everywhere"),
    ("RECONCILE_INTERVAL_SECONDS", "0"),
    ("EC2_TARGET", "mars"),
    ("EC2_ENDPOINT_URL", "127.0.0.1:5000"),
    ("BUDGET_USD", "0"),
    ("BUDGET_USD", "-5"),
    ("DEFAULT_AUTO_STOP_MINUTES", "0"),
    ("DEFAULT_AUTO_STOP_MINUTES", "10081"),
    ("PRICES_FILE", "/nonexistent/prices.json"),
    ("SMTP_PORT", "0"),
    ("SMTP_PORT", "smtp"),
    ("SMTP_HOST", "smtp.example.com"),  # without NOTIFY_EMAIL_TO: nobody to mail
    ("NOTIFY_EMAIL_TO", "dev@example.com"),  # without SMTP_HOST and SMTP_FROM
    ("NOTIFY_EMAIL_TO", "not-an-address"),
    ("NOTIFY_URLS", "notaurl"),
    ("NOTIFY_URLS", "json://"),
    ("NOTIFY_EVENTS", "create,explode"),
    ("AUTO_STOP_WARNING_MINUTES", "-1"),
    ("NOTIFY_API_URL", "ftp://x"),
])
def test_bad_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        settings()


def test_notification_settings(monkeypatch):
    for name, value in {"SMTP_HOST": "smtp.gmail.com", "SMTP_FROM": "me@gmail.com", "SMTP_USERNAME": "me@gmail.com",
                        "SMTP_PASSWORD": "app-password", "NOTIFY_EMAIL_TO": "a@example.com, b@example.com",
                        "NOTIFY_URLS": "json://127.0.0.1:9/hook?x=a,b, ntfy://ntfy.sh/topic",
                        "NOTIFY_EVENTS": "stop,budget_100"}.items():
        monkeypatch.setenv(name, value)
    s = settings()
    assert s.smtp_port == 587 and s.smtp_starttls and s.auto_stop_warning_minutes == 15
    assert s.notify_email_to == ["a@example.com", "b@example.com"]
    # A comma inside a URL stays in it: URLs are split only where the next one begins.
    assert [u.get_secret_value() for u in s.notify_urls] == ["json://127.0.0.1:9/hook?x=a,b", "ntfy://ntfy.sh/topic"]
    assert s.notify_events == ["stop", "budget_100"]
    monkeypatch.delenv("SMTP_PASSWORD")
    with pytest.raises(ValidationError, match="SMTP_USERNAME and SMTP_PASSWORD go together"):
        settings()


@pytest.mark.parametrize("argv, url", [
    (["uvicorn", "app.main:app"], "http://127.0.0.1:8000"),  # uvicorn's defaults
    (["uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "8123"], "http://127.0.0.1:8123"),  # make run PORT=
    (["uvicorn", "--port=9001", "--host=0.0.0.0"], "http://127.0.0.1:9001"),  # a wildcard: reached on this host
    (["uvicorn", "--host", "::1", "--port", "8080"], "http://[::1]:8080"),
    (["uvicorn", "--host", "ec2.example.com", "--port", "80"], "http://ec2.example.com:80"),
])
def test_notify_api_url_follows_the_address_the_server_listens_on(monkeypatch, argv, url):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.delenv("UVICORN_PORT", raising=False)
    monkeypatch.delenv("UVICORN_HOST", raising=False)
    assert settings().notify_api_url == url
    monkeypatch.setenv("NOTIFY_API_URL", "https://ec2.example.com/")  # given: used as it is
    assert settings().notify_api_url == "https://ec2.example.com"


def test_notify_api_url_follows_uvicorns_environment_too(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["uvicorn", "app.main:app"])
    monkeypatch.setenv("UVICORN_PORT", "8555")
    assert settings().notify_api_url == "http://127.0.0.1:8555"


def test_a_bad_notify_url_stops_the_server_naming_the_variable_not_the_secret(tmp_path):
    # Apprise logs a URL it cannot parse word for word: the server keeps that out of its output.
    for urls, entry in (("json://127.0.0.1:9/ok, bogus://tok-s3cret-55@x", "entry 2 (bogus://...)"),
                        ("hooks.slack.com/services/T0AAAA/B0BBBB/tok-s3cret-55", "entry 1 (?://...)")):
        env = safe_env(NOTIFY_URLS=urls, DATABASE_URL=str(tmp_path / "db"), EC2_ENDPOINT_URL="http://127.0.0.1:9")
        done = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert "NOTIFY_URLS" in done.stderr and entry in done.stderr, done.stderr
        assert "tok-s3cret-55" not in done.stderr + done.stdout


@pytest.mark.parametrize("url, password", [
    ("postgresql://u:pa%ss@h/db", "pa%ss"),  # a bare % in the password: psycopg quotes the token
    ("postgresql://u:se cret@h/db", "se cret"),  # a space: quoted too
    ("postgresql://u:x@h/db?password=s3%cr3t", "s3%cr3t"),  # the password as a parameter
])
def test_an_unparsable_database_url_never_shows_its_password(monkeypatch, url, password):
    from app.config import config_problems

    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ValidationError) as caught:
        settings()
    lines = config_problems(caught.value)
    assert len(lines) == 1 and lines[0].startswith("DATABASE_URL: is not a PostgreSQL URL psycopg can use ("), lines
    assert password not in lines[0] and '"***"' in lines[0], lines
    assert password not in str(caught.value)  # nor in the error's own text (a traceback's)


def test_a_start_with_an_unparsable_database_url_never_prints_its_password(tmp_path):
    env = safe_env(DATABASE_URL="postgresql://app:hunter%2secret@db.example/ec2", EC2_ENDPOINT_URL="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("ec2-creator-local: bad configuration: DATABASE_URL: "), done.stderr
    assert "hunter" not in done.stderr + done.stdout and "secret" not in done.stderr + done.stdout, done.stderr


def test_spend_guard_defaults():
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.budget_usd == 5.0 and s.default_auto_stop_minutes == 480
    assert Settings(_env_file=None, default_auto_stop_minutes="never").default_auto_stop_minutes is None  # type: ignore[call-arg]


@pytest.fixture
def no_budget_env(monkeypatch, tmp_path):
    """No BUDGET_USD, SANDBOX_BUDGET_USD nor EC2_* in the environment, and an empty working directory (no .env)."""
    for name in ("BUDGET_USD", "SANDBOX_BUDGET_USD", "EC2_TARGET", "EC2_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_the_sandbox_has_its_own_budget_unless_budget_usd_is_set(no_budget_env, tmp_path):
    # The emulator's instances cost nothing: 5 USD of pretend spending refused every create after about seven.
    no_budget_env.setenv("EC2_TARGET", "sandbox")
    s = Settings()  # reads ./.env, as the server does
    assert (s.budget_usd, s.budget_from) == (100.0, "SANDBOX_BUDGET_USD, BUDGET_USD unset")
    no_budget_env.setenv("SANDBOX_BUDGET_USD", "250")
    assert Settings().budget_usd == 250.0
    # BUDGET_USD wins, wherever it is set: the environment, or .env.
    no_budget_env.setenv("BUDGET_USD", "3")
    assert (Settings().budget_usd, Settings().budget_from) == (3.0, "BUDGET_USD")
    no_budget_env.delenv("BUDGET_USD")
    (tmp_path / ".env").write_text("BUDGET_USD=3\n")
    assert (Settings().budget_usd, Settings().budget_from) == (3.0, "BUDGET_USD")
    # Against AWS (or with no EC2_TARGET), BUDGET_USD's default; SANDBOX_BUDGET_USD does not apply.
    (tmp_path / ".env").write_text("SANDBOX_BUDGET_USD=250\n")
    no_budget_env.delenv("SANDBOX_BUDGET_USD")
    assert Settings().budget_usd == 250.0  # from .env too
    for target in ("aws", None):
        if target:
            no_budget_env.setenv("EC2_TARGET", target)
        else:
            no_budget_env.delenv("EC2_TARGET")
        s = Settings()
        assert (s.budget_usd, s.budget_from) == (5.0, "BUDGET_USD's default")
    no_budget_env.setenv("SANDBOX_BUDGET_USD", "0")
    with pytest.raises(ValidationError, match="sandbox_budget_usd"):
        Settings()


def test_server_refuses_to_start_with_an_unknown_backend(tmp_path):
    env = safe_env(BACKEND="boto3", DATABASE_URL=str(tmp_path / "db.sqlite"), EC2_ENDPOINT_URL="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines() == ["ec2-creator-local: bad configuration: BACKEND='boto3' is not supported; the "
                                        "only backend is 'awscli'"]


PREFIX = "ec2-creator-local: bad configuration: "


@pytest.mark.parametrize("env, names", [
    # one model-level problem: it had no variable name ("bad configuration: : Value error, EC2_TARGET=aws ...")
    ({"EC2_TARGET": "aws"}, ["EC2_TARGET"]),
    # two field problems: one line each, with the value given
    ({"BUDGET_USD": "abc", "SMTP_PORT": "x"}, ["BUDGET_USD", "SMTP_PORT"]),
    # every problem of settings that go together at once, not the first only
    ({"EC2_TARGET": "aws", "SMTP_USERNAME": "me", "NOTIFY_EMAIL_TO": "a@example.com"},
     ["NOTIFY_EMAIL_TO", "SMTP_USERNAME", "EC2_TARGET"]),
])
def test_a_bad_start_prints_one_line_per_problem_naming_the_variable(tmp_path, monkeypatch, env, names):
    env = safe_env(DATABASE_URL=str(tmp_path / "db"), EC2_ENDPOINT_URL="http://127.0.0.1:9", **env)
    real = len(names) == 3  # the real start, once (~1 CPU-s a process): several lines, a model-level one among them
    if real:  # the server prints what stopped it
        done = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        stderr = done.stderr
    else:  # the lines themselves: what the start's load_settings() stops it with (QuietStartupExit prints it)
        from app.config import get_settings, load_settings

        for name in [n for n in os.environ if n not in env]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        try:
            with pytest.raises(SystemExit) as stopped:
                load_settings()
        finally:
            get_settings.cache_clear()
        stderr = f"{stopped.value.code}\n"
    assert "Traceback" not in stderr and "Value error" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == len(names), stderr
    for line, name in zip(lines, names, strict=True):
        assert line.startswith(PREFIX + name), stderr
    if real:
        assert not (tmp_path / "db").exists()  # stopped before anything was opened
    if "BUDGET_USD" in names:
        assert lines[0] == PREFIX + "BUDGET_USD: Input should be a valid number, unable to parse string as a number " \
                                    "(got 'abc')"


def test_every_problem_names_its_variables_and_no_secret(monkeypatch, tmp_path):
    from app.config import config_problems

    monkeypatch.setenv("API_TOKEN", "short secret")
    monkeypatch.setenv("SMTP_PORT", "smtp")
    with pytest.raises(ValidationError) as caught:
        settings()
    lines = config_problems(caught.value)
    assert lines[0].startswith("API_TOKEN must be at least 16") and lines[1].startswith("SMTP_PORT: ")
    assert "short secret" not in "\n".join(lines)
    monkeypatch.delenv("SMTP_PORT")
    monkeypatch.setenv("API_TOKEN", "the-api-token-0123456789")
    for name, value in {"SMTP_HOST": "smtp.example.com", "SMTP_PASSWORD": "pw", "EC2_TARGET": "aws",
                        "EC2_ENDPOINT_URL": "http://127.0.0.1:9",
                        "API_TOKENS_FILE": str(_tokens_file(tmp_path, ("alice", "the-api-token-0123456789", "user")))
                        }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        settings()
    assert [line.split()[0] for line in config_problems(caught.value)] == [
        "API_TOKENS_FILE", "SMTP_HOST", "SMTP_USERNAME", "EC2_TARGET=aws"]


# -- what the server reads from .env reaches every `aws` child ---------------------------------------
AWS_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")


def test_aws_settings_in_dotenv_reach_the_cli(emulator, fresh_emulator, tmp_path):
    import boto3
    import httpx

    from tests.support.emulator import KEY_NAME
    from tests.support.server import ApiServer

    (tmp_path / ".env").write_text("AWS_REGION=eu-west-1\nAWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n"
                                   "AWS_CLI_CONNECT_TIMEOUT=7\nAWS_CLI_READ_TIMEOUT=21\n")
    ec2 = boto3.client("ec2", endpoint_url=emulator.url, region_name="eu-west-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    ec2.create_key_pair(KeyName=KEY_NAME)
    server = ApiServer(tmp_path, emulator.url, cwd=tmp_path, unset=AWS_ENV)
    try:
        # ssh_from none: its group without the SSH rule (one `aws` process fewer); the group and the launch still
        # carry the region and timeouts checked below.
        response = httpx.post(f"{server.url}/instances", timeout=60,
                              json={"name": "dotenv", "ami": "amazon-linux-2023", "instance_type": "t3.micro",
                                    "ssh_from": "none"})
        assert response.status_code == 201, response.text  # the keys reached the CLI
        assert response.json()["region"] == "eu-west-1"
        calls = server.aws_calls()
        assert calls and all(c[c.index("--region") + 1] == "eu-west-1" for c in calls)
        assert all(c[c.index("--cli-connect-timeout") + 1] == "7" for c in calls)
        assert all(c[c.index("--cli-read-timeout") + 1] == "21" for c in calls)
        assert "region eu-west-1" in server.server_log()  # the region logged is the region used
        httpx.post(f"{server.url}/instances/sync", timeout=60)  # the account is known once EC2 answered
        assert "EC2 account 123456789012 (SANDBOX, region eu-west-1)" in server.server_log()
        ids = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        assert response.json()["id"] in ids
    finally:
        server.stop()


def test_a_wrong_profile_in_dotenv_is_reported_not_ignored(emulator, tmp_path):
    import httpx

    from tests.support.server import ApiServer

    (tmp_path / ".env").write_text("AWS_PROFILE=no-such-profile\n")
    server = ApiServer(tmp_path, emulator.url, cwd=tmp_path, unset=("AWS_PROFILE",))
    try:
        response = httpx.post(f"{server.url}/instances", timeout=60,
                              json={"name": "dotenv", "ami": "amazon-linux-2023", "instance_type": "t3.micro"})
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "no_credentials"
        assert "no-such-profile" in response.json()["detail"]
        assert "AWS_PROFILE=no-such-profile" in server.server_log()  # with the keys that win over it
    finally:
        server.stop()


def test_child_env_carries_every_aws_setting():
    from app.aws.runner import child_env

    s = settings(AWS_PROFILE="work", AWS_REGION="ap-south-1", AWS_SECRET_ACCESS_KEY="s", AWS_ACCESS_KEY_ID="a",
                 AWS_SESSION_TOKEN="t", AWS_CLI_CONNECT_TIMEOUT="3", AWS_CLI_READ_TIMEOUT="9")
    env = child_env(s, base={"AWS_REGION": "us-east-1", "AWS_SESSION_TOKEN": "stale", "PATH": "/bin"})
    assert (env["AWS_PROFILE"], env["AWS_REGION"], env["AWS_DEFAULT_REGION"]) == ("work", "ap-south-1", "ap-south-1")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env["AWS_SESSION_TOKEN"]) == ("a", "s", "t")
    assert (env["AWS_CLI_CONNECT_TIMEOUT"], env["AWS_CLI_READ_TIMEOUT"]) == ("3", "9")
    bare = child_env(settings(), base={"AWS_SESSION_TOKEN": "stale", "AWS_PROFILE": "old"})
    assert "AWS_SESSION_TOKEN" not in bare and "AWS_PROFILE" not in bare


@pytest.mark.parametrize("value", ["us-east", "US-EAST-1", "us-east-1; rm", "--region"])
def test_bad_regions_are_refused(monkeypatch, value):
    monkeypatch.setenv("AWS_REGION", value)
    with pytest.raises(ValidationError):
        settings()


# -- API_TOKENS_FILE: one token per person (the file's format: tests/auth/test_tokens.py) ----------------
def _tokens_file(tmp_path, *people: tuple[str, str, str], name: str = "tokens.toml"):
    import hashlib

    path = tmp_path / name
    path.write_text("".join(f'[[users]]\nname = "{who}"\nsha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                            f'role = "{role}"\n' for who, token, role in people))
    return path


def test_a_tokens_file_protects_the_server(monkeypatch, tmp_path):
    from app.auth.tokens import token_file

    path = _tokens_file(tmp_path, ("alice", "alice-token-0123456789", "user"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_TOKENS_FILE", "tokens.toml")
    s = settings()
    assert s.api_tokens_file == Path.cwd() / path.name and s.api_token is None and s.auth_configured
    assert token_file(s.api_tokens_file).lookup("alice-token-0123456789").name == "alice"
    monkeypatch.setenv("API_TOKENS_FILE", "")
    assert settings().api_tokens_file is None and not settings().auth_configured
    assert settings(API_TOKEN="x" * 20).auth_configured


def test_a_symlinked_tokens_file_is_watched_as_given_not_where_it_pointed_at_start(monkeypatch, tmp_path):
    # API_TOKENS_FILE mounted from a Kubernetes ConfigMap: a revocation swaps ..data to a new version and deletes
    # the old one. Resolved once at start, the server kept reading the old file (the revoked token worked), then
    # found it gone (503 for everyone).
    from app.auth.tokens import token_file

    alice, bob = ("alice", "alice-token-0123456789", "user"), ("bob", "bob-token-0123456789", "user")
    path = publish(tmp_path / "config", _tokens_file(tmp_path, alice, bob).read_text())
    monkeypatch.setenv("API_TOKENS_FILE", str(path))
    s = settings()
    tokens = token_file(s.api_tokens_file, s.reserved_user_names)  # as each request gets it (app/api/deps.py)
    assert tokens.lookup("alice-token-0123456789").name == "alice"
    publish(tmp_path / "config", _tokens_file(tmp_path, bob).read_text())  # alice revoked
    assert tokens.lookup("alice-token-0123456789") is None  # no TokensFileInvalid (503) either
    assert tokens.lookup("bob-token-0123456789").name == "bob"
    assert s.api_tokens_file == path  # the path as given (made absolute), not its target at start


@pytest.mark.parametrize("content, message", [
    (None, "cannot be read"),
    ("[[users]]\nname = \"alice\"\n", "missing role, sha256"),
    ("[[users]]\nname = \"alice\"\nsha256 = \"" + "a" * 64 + "\"\nrole = \"owner\"\n", "role must be admin or user"),
    ("[[users]]\nname = \"alice\"\nsha256 = \"abc\"\nrole = \"user\"\n", "sha256 must be 64 hex digits"),
    ("[[users]]\nname = \"alice\"\nsha256 = \"" + "a" * 64 + "\"\nrole = \"user\"\n" * 2, "is not valid TOML"),
    ("[[users]]\nname = \"a\"\nsha256 = \"" + "a" * 64 + "\"\nrole = \"user\"\n"
     "[[users]]\nname = \"a\"\nsha256 = \"" + "b" * 64 + "\"\nrole = \"user\"\n", "named twice"),
    ("[[users]]\nname = \"a\"\nsha256 = \"" + "a" * 64 + "\"\nrole = \"user\"\n"
     "[[users]]\nname = \"b\"\nsha256 = \"" + "a" * 64 + "\"\nrole = \"user\"\n", "same token hash"),
])
def test_a_bad_tokens_file_is_refused_naming_the_variable(monkeypatch, tmp_path, content, message):
    from app.config import describe_errors

    path = tmp_path / "tokens.toml"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("API_TOKENS_FILE", str(path))
    with pytest.raises(ValidationError) as caught:
        settings()
    described = describe_errors(caught.value)
    assert described.startswith("API_TOKENS_FILE: ") and message in described, described


def test_api_token_is_the_admin_beside_a_tokens_file(monkeypatch, tmp_path):
    api_token = "the-api-token-0123456789"
    monkeypatch.setenv("API_TOKEN", api_token)
    monkeypatch.setenv("API_TOKENS_FILE", str(_tokens_file(tmp_path, ("alice", api_token, "user"))))
    with pytest.raises(ValidationError, match="gives 'alice' the token of API_TOKEN"):
        settings()
    # "admin" is API_TOKEN's name while it is set; a file may use it otherwise.
    monkeypatch.setenv("API_TOKENS_FILE", str(_tokens_file(tmp_path, ("admin", "another-token-0123456789", "admin"))))
    with pytest.raises(ValidationError, match="'admin' is API_TOKEN's"):
        settings()
    monkeypatch.delenv("API_TOKEN")
    assert settings().reserved_user_names == frozenset()


def test_server_refuses_to_start_with_a_bad_tokens_file(tmp_path):
    bad = tmp_path / "tokens.json"
    bad.write_text('{"users": [{"name": "alice", "sha256": "abc", "role": "user"}]}')
    env = safe_env(API_TOKENS_FILE=str(bad), DATABASE_URL=str(tmp_path / "db"), EC2_ENDPOINT_URL="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("ec2-creator-local: bad configuration: API_TOKENS_FILE: "), done.stderr
    assert "sha256 must be 64 hex digits" in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
