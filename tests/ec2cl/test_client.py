"""The API client's error mapping and its retry-safe create, against httpx's MockTransport (an API in process)."""

import httpx
import pytest

from ec2cl.client import RESEND_DELAYS, Api
from ec2cl.config import Profile
from ec2cl.errors import REFUSED, UNREACHABLE, CliError

PROFILE = Profile("default", "http://api.test", "tok", path=None)  # type: ignore[arg-type]
BOX = {"id": "i-0123456789abcdef0", "name": "web-1", "state": "pending"}


def api_with(handler, sleeps=None) -> Api:
    return Api(PROFILE, httpx.MockTransport(handler), sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_the_token_goes_as_a_bearer_and_an_error_envelope_becomes_one_line():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(409, json={"detail": "Cannot start i-1: it is terminated.", "code": "wrong_state"})

    with pytest.raises(CliError) as raised:
        api_with(handler).post("/instances/i-1/start")
    assert seen == ["Bearer tok"]
    assert (raised.value.exit_code, raised.value.line()) == (
        REFUSED, "ec2cl: wrong_state: Cannot start i-1: it is terminated.")


def test_an_answer_that_is_not_the_envelope_is_named_by_its_status():
    with pytest.raises(CliError) as raised:
        api_with(lambda r: httpx.Response(502, text="<html>bad gateway</html>")).get("/instances")
    assert raised.value.line() == "ec2cl: http_502: the API answered 502 Bad Gateway"


def test_a_create_whose_connection_drops_goes_again_with_the_same_key():
    keys, sleeps, notes = [], [], []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        if len(keys) == 1:
            raise httpx.ReadError("connection reset")
        if len(keys) == 2:
            raise httpx.ConnectError("refused: the server restarts")
        if len(keys) == 3:
            return httpx.Response(409, json={"detail": "still launching", "code": "launch_in_progress"})
        return httpx.Response(201, json=BOX, headers={"Idempotent-Replayed": "true"})

    created, replayed = api_with(handler, sleeps).create({"name": "web-1"}, on_resend=notes.append)
    assert (created, replayed) == (BOX, True)
    assert len(keys) == 4 and len(set(keys)) == 1 and keys[0].startswith("ec2cl-")
    assert sleeps == list(RESEND_DELAYS[:3]) and len(notes) == 3
    assert notes[0] == ("connection reset: sending the create again in 1 s with the same Idempotency-Key (no second "
                        "instance is launched)")


def test_a_create_that_never_connects_is_unreachable_at_once():
    sleeps: list = []

    def handler(request):
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(CliError) as raised:
        api_with(handler, sleeps).create({})
    assert raised.value.exit_code == UNREACHABLE and sleeps == []


def test_a_create_whose_connection_keeps_dropping_says_it_may_have_gone_through():
    keys: list = []

    def handler(request):
        keys.append(request.headers["idempotency-key"])
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(CliError) as raised:
        api_with(handler).create({})
    assert raised.value.exit_code == UNREACHABLE and len(keys) == len(RESEND_DELAYS) + 1
    assert raised.value.message.endswith(f"The create may have gone through: `ec2cl ls` shows it (its "
                                         f"Idempotency-Key was {keys[0]}).")


def test_a_409_launch_in_progress_on_the_first_try_is_a_refusal():
    # Only a re-send can meet its own first request still launching; a first try that does met another client's.
    with pytest.raises(CliError) as raised:
        api_with(lambda r: httpx.Response(409, json={"detail": "x", "code": "launch_in_progress"})).create({})
    assert (raised.value.exit_code, raised.value.code) == (REFUSED, "launch_in_progress")
