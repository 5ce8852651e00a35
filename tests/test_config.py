"""Settings: defaults, parsing, and fail-fast on bad values (also as a real server start)."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.config import Settings
from conftest import ROOT, safe_env


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
])
def test_bad_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        settings()


def test_server_refuses_to_start_with_an_unknown_backend(tmp_path):
    env = safe_env(BACKEND="boto3", DATABASE_URL=str(tmp_path / "db.sqlite"), EC2_ENDPOINT_URL="http://127.0.0.1:9")
    done = subprocess.run([sys.executable, "-m", "uvicorn", "app.main:app", "--port", "0"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "BACKEND" in done.stderr and "awscli" in done.stderr
