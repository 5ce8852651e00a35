"""Unit tests of the create helpers: EC2 client tokens and request hashing."""

import pytest

from app.instances.schemas import InstanceCreate
from app.instances.service import TRANSITIONS, client_token, request_hash


@pytest.mark.parametrize("key", ["order-42", "A" * 64, "x:y/z@1"])
def test_plain_keys_are_the_token(key):
    assert client_token(key, "rid") == key


@pytest.mark.parametrize("key", ["-dry-run", "--client-token", "file:///etc/passwd", "FILEB://x", "https://h/x",
                                 "k" * 65, "has space", "caf\u00e9"])
def test_risky_or_long_keys_are_hashed(key):
    token = client_token(key, "rid")
    assert len(token) == 64 and token != key and all(c in "0123456789abcdef" for c in token)


def test_no_key_uses_the_request_id():
    assert client_token(None, "0123abcd") == "0123abcd"


def test_request_hash_depends_on_the_whole_body():
    base = InstanceCreate(name="a", ami="amazon-linux-2023", instance_type="t3.micro")
    same = InstanceCreate(name="a", ami="amazon-linux-2023", instance_type="t3.micro", storage_gb=8)
    other = InstanceCreate(name="a", ami="amazon-linux-2023", instance_type="t3.micro", tags={"k": "v"})
    assert request_hash(base) == request_hash(same) != request_hash(other)


def test_transition_table():
    assert "running" in TRANSITIONS["start"].noop and "stopped" in TRANSITIONS["start"].allowed
    assert "stopping" in TRANSITIONS["stop"].noop and "running" in TRANSITIONS["stop"].allowed
    for action in ("start", "stop"):
        rule = TRANSITIONS[action]
        assert "terminated" not in rule.allowed | rule.noop  # -> 409
    assert "terminated" in TRANSITIONS["delete"].noop
