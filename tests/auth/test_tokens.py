"""API_TOKENS_FILE: parsing (TOML and JSON), every refusal, the token lookup, and re-reading on change."""

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from app.auth.tokens import LOCAL, Caller, TokenFile, TokensFileInvalid, load_users, parse_users, token_file
from tests.support.configmap import publish

ALICE, BOB, ROOT = "alice-token-0123456789abcdef", "bob-token-0123456789abcdef", "root-token-0123456789abcdef"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def entry(name: str, token: str, role: str = "user") -> dict:
    return {"name": name, "sha256": sha(token), "role": role}


def toml(*entries: dict) -> str:
    return "".join(f'[[users]]\nname = "{e["name"]}"\nsha256 = "{e["sha256"]}"\nrole = "{e["role"]}"\n\n'
                   for e in entries)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_toml_and_json_give_the_same_people(tmp_path):
    people = [entry("alice", ALICE), entry("root", ROOT, "admin")]
    from_toml = load_users(write(tmp_path / "t.toml", "# a comment\n" + toml(*people)))
    from_json = load_users(write(tmp_path / "t.json", json.dumps({"users": people})))
    assert from_toml == from_json
    assert [(u.name, u.role, u.sha256.hex()) for u in from_toml] == [
        ("alice", "user", sha(ALICE)), ("root", "admin", sha(ROOT))]


def test_an_empty_file_has_nobody_and_hex_case_does_not_matter(tmp_path):
    assert load_users(write(tmp_path / "t.toml", "")) == []
    upper = {"users": [{**entry("alice", ALICE), "sha256": sha(ALICE).upper()}]}
    assert load_users(write(tmp_path / "t.json", json.dumps(upper)))[0].sha256.hex() == sha(ALICE)


@pytest.mark.parametrize("doc, message", [
    ([], "must hold a table"),
    ({"users": {}}, '"users" must be a list'),
    ({"users": [], "extra": 1}, "unknown top-level keys ['extra']"),
    ({"users": ["alice"]}, "user 1 must be a table"),
    ({"users": [{"name": "alice", "role": "user"}]}, "missing sha256"),
    ({"users": [{**entry("alice", ALICE), "token": ALICE}]}, "unknown keys ['token']"),
    ({"users": [{**entry("alice", ALICE), "name": "Alice"}]}, "name must be 1-64 of a-z 0-9"),
    ({"users": [{**entry("alice", ALICE), "name": "x" * 65}]}, "name must be 1-64"),
    ({"users": [{**entry("alice", ALICE), "name": 7}]}, "name must be 1-64"),
    ({"users": [entry("alice", ALICE), entry("alice", BOB)]}, "user 'alice' is named twice"),
    ({"users": [{**entry("alice", ALICE), "role": "root"}]}, "role must be admin or user, got 'root'"),
    ({"users": [{**entry("alice", ALICE), "sha256": sha(ALICE)[:63]}]}, "sha256 must be 64 hex digits"),
    ({"users": [{**entry("alice", ALICE), "sha256": "g" * 64}]}, "sha256 must be 64 hex digits"),
    ({"users": [{**entry("alice", ALICE), "sha256": ALICE}]}, "never the token"),
    ({"users": [entry("alice", ALICE), entry("bob", ALICE)]}, "user 'bob' has the same token hash as 'alice'"),
])
def test_a_bad_file_is_refused_with_what_is_wrong(doc, message):
    with pytest.raises(ValueError) as caught:
        parse_users(doc, "tokens.json")
    assert message in str(caught.value)
    assert str(caught.value).startswith("tokens.json: ")
    assert sha(ALICE) not in str(caught.value) and ALICE not in str(caught.value)


def test_a_reserved_name_is_refused():
    with pytest.raises(ValueError, match="'admin' is API_TOKEN's"):
        parse_users({"users": [entry("admin", ALICE, "admin")]}, "f", reserved={"admin"})
    assert parse_users({"users": [entry("admin", ALICE, "admin")]}, "f")[0].name == "admin"


@pytest.mark.parametrize("name, text, message", [
    ("t.toml", "[[users]\n", "is not valid TOML"),
    ("t.json", "{", "is not valid JSON"),
    ("t.yaml", "users: []", "must end with .toml or .json"),
    ("missing.toml", None, "cannot be read (No such file or directory)"),
])
def test_an_unreadable_or_malformed_file_is_refused(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=r".*" + message.replace("(", r"\(").replace(")", r"\)")):
        load_users(path)


def test_lookup_finds_each_person_by_their_token_only(tmp_path):
    tokens = TokenFile(write(tmp_path / "t.toml", toml(entry("alice", ALICE), entry("root", ROOT, "admin"))))
    alice = tokens.lookup(ALICE)
    assert alice is not None and (alice.name, alice.role) == ("alice", "user")
    assert tokens.lookup(ROOT).role == "admin"
    for wrong in ("", ALICE + "x", ALICE[:-1], sha(ALICE), BOB):
        assert tokens.lookup(wrong) is None


def test_the_file_is_read_again_when_it_changes(tmp_path):
    path = write(tmp_path / "t.toml", toml(entry("alice", ALICE)))
    tokens = TokenFile(path)
    assert tokens.lookup(BOB) is None
    # Added the way scripts/add_user.sh does it: a new file renamed over the old one.
    write(tmp_path / "new.toml", toml(entry("alice", ALICE), entry("bob", BOB)))
    os.replace(tmp_path / "new.toml", path)
    assert tokens.lookup(BOB).name == "bob"
    # Revoked by an edit in place.
    write(path, toml(entry("bob", BOB)))
    os.utime(path, ns=(1, 1))  # even with an mtime that went back: the size changed
    assert tokens.lookup(ALICE) is None and tokens.lookup(BOB) is not None


def test_a_re_pointed_symlink_is_followed_and_its_deleted_target_does_not_matter(tmp_path):
    # A Kubernetes ConfigMap: tokens.toml -> ..data/tokens.toml, ..data -> ..<version>; an update swaps ..data
    # to a new version and deletes the old one.
    path = publish(tmp_path / "config", toml(entry("alice", ALICE), entry("bob", BOB)))
    tokens = TokenFile(path)
    assert tokens.lookup(ALICE).name == "alice" and tokens.lookup(BOB).name == "bob"
    publish(tmp_path / "config", toml(entry("bob", BOB)))  # alice revoked
    assert tokens.lookup(ALICE) is None and tokens.lookup(BOB).name == "bob"
    # A release symlink re-pointed to a file of the same size and time (and the old one left in place).
    (tmp_path / "r1.toml").write_text(toml(entry("bob", BOB)))
    (tmp_path / "r2.toml").write_text(toml(entry("bob", ROOT)))
    os.utime(tmp_path / "r2.toml", ns=(1, 1))
    os.utime(tmp_path / "r1.toml", ns=(1, 1))
    (tmp_path / "current.toml").symlink_to("r1.toml")
    release = TokenFile(tmp_path / "current.toml")
    assert release.lookup(BOB).name == "bob"
    (tmp_path / "next.toml").symlink_to("r2.toml")
    os.replace(tmp_path / "next.toml", tmp_path / "current.toml")
    assert release.lookup(BOB) is None and release.lookup(ROOT).name == "bob"


def test_a_file_gone_bad_refuses_every_token_until_fixed(tmp_path, caplog):
    path = write(tmp_path / "t.toml", toml(entry("alice", ALICE)))
    tokens = TokenFile(path)
    assert tokens.lookup(ALICE) is not None
    write(path, toml(entry("alice", ALICE)) + 'role = "boss"\n')  # a half-made edit
    with caplog.at_level(logging.ERROR, logger="ec2_creator.users"):
        for _ in range(3):
            with pytest.raises(TokensFileInvalid, match="is not valid TOML"):
                tokens.lookup(ALICE)
    assert len(caplog.records) == 1  # logged once per change, not once per request
    path.unlink()
    with pytest.raises(TokensFileInvalid, match="cannot be read"):
        tokens.lookup(ALICE)
    write(path, toml(entry("alice", ALICE)))
    assert tokens.lookup(ALICE).name == "alice"


def test_one_token_file_per_path(tmp_path):
    path = write(tmp_path / "t.toml", "")
    assert token_file(path) is token_file(path)
    assert token_file(path, {"admin"}) is not token_file(path)


def test_who_sees_what():
    alice, root = Caller("alice", "user"), Caller("root", "admin")
    assert alice.may_see("alice") and not alice.may_see("bob") and not alice.may_see(None)
    assert root.may_see("alice") and root.may_see(None)
    assert LOCAL.is_admin and LOCAL.name is None and LOCAL.may_see("bob")
    assert (alice.only_owner, root.only_owner, LOCAL.only_owner) == ("alice", None, None)
    # An Idempotency-Key is its owner's; an admin may also replay one kept without an owner.
    assert alice.may_replay("alice") and not alice.may_replay("bob") and not alice.may_replay(None)
    assert root.may_replay(None) and root.may_replay("root") and not root.may_replay("alice")
    assert LOCAL.may_replay(None) and not LOCAL.may_replay("alice")
