"""ssh_from: validation, my_ip from MY_IP_URL (a real local HTTP server), and what ssh_string says."""

import asyncio
import time
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.core.errors import ApiError
from app.instances.recorder import NO_PUBLIC_ADDRESS, Recorder
from app.instances.schemas import InstanceCreate, SshAccess
from app.instances.ssh_access import MyIp, admits
from tests.support.checkip import CheckIp


@pytest.fixture
def checkip() -> Iterator[CheckIp]:
    served = CheckIp()
    yield served
    served.close()


BODY = {"name": "web", "ami": "amazon-linux-2023", "instance_type": "t3.micro"}


@pytest.mark.parametrize("given, stored", [("my_ip", "my_ip"), ("none", "none"), ("198.51.100.4", "198.51.100.4/32"),
                                           ("198.51.100.0/24", "198.51.100.0/24"), ("0.0.0.0/0", "0.0.0.0/0"),
                                           ("10.1.2.3/8", "10.0.0.0/8")])
def test_ssh_from_takes_my_ip_none_an_address_or_a_cidr(given, stored):
    assert InstanceCreate.model_validate(BODY | {"ssh_from": given}).ssh_from == stored
    assert SshAccess.model_validate({"ssh_from": given}).ssh_from == stored


@pytest.mark.parametrize("bad", ["", "everyone", "MY_IP", "::1", "2001:db8::/32", "300.1.1.1", "1.2.3.4/33",
                                 "1.2.3.4/", 22, ["my_ip"]])
def test_a_bad_ssh_from_is_refused_naming_the_field(bad):
    with pytest.raises(ValidationError) as refused:
        InstanceCreate.model_validate(BODY | {"ssh_from": bad})
    assert refused.value.errors()[0]["loc"][0] == "ssh_from"
    with pytest.raises(ValidationError):
        SshAccess.model_validate({"ssh_from": bad})


def test_unset_ssh_from_stays_unset_so_old_requests_hash_the_same():
    from app.instances.service import request_hash
    req = InstanceCreate.model_validate(BODY)
    assert req.ssh_from is None
    assert request_hash(req) == request_hash(InstanceCreate.model_validate(BODY | {"create_security_group": False}))
    assert request_hash(req) != request_hash(InstanceCreate.model_validate(BODY | {"ssh_from": "none"}))


def test_my_ip_is_what_my_ip_url_answers_fetched_once_a_minute(checkip):
    my_ip = MyIp(checkip.url, sandbox=True)
    assert asyncio.run(my_ip.get("127.0.0.1")) == "203.0.113.7"  # MY_IP_URL wins over the request's address
    checkip.answer = "203.0.113.8\n"
    assert asyncio.run(my_ip.get()) == "203.0.113.7" and checkip.hits == 1  # cached


def test_without_my_ip_url_the_sandbox_uses_the_requests_address():
    assert asyncio.run(MyIp(None, sandbox=True).get("127.0.0.1")) == "127.0.0.1"
    with pytest.raises(ApiError) as refused:
        asyncio.run(MyIp(None, sandbox=True).get("::1"))
    assert refused.value.code == "my_ip_unavailable"


@pytest.mark.parametrize("status, answer", [(500, "oops"), (200, "<html>not an address</html>"), (200, "::1")])
def test_a_failing_my_ip_url_is_a_clear_error_naming_it(checkip, status, answer):
    checkip.status, checkip.answer = status, answer
    with pytest.raises(ApiError) as refused:
        asyncio.run(MyIp(checkip.url, sandbox=False).get())
    assert refused.value.status_code == 502 and refused.value.code == "my_ip_unavailable"
    assert "MY_IP_URL" in refused.value.detail


def test_a_slow_my_ip_url_times_out_without_blocking_the_event_loop(checkip):
    checkip.delay = 30.0  # far beyond the timeout, so that a loaded machine cannot blur the two
    ticks = []

    async def both() -> None:
        async def tick() -> None:
            for _ in range(5):
                ticks.append(time.monotonic())
                await asyncio.sleep(0.05)

        results = await asyncio.gather(MyIp(checkip.url, sandbox=False, timeout=0.5).get(), tick(),
                                       return_exceptions=True)
        assert isinstance(results[0], ApiError) and results[0].code == "my_ip_unavailable"

    started = time.monotonic()
    asyncio.run(both())
    assert time.monotonic() - started < 15  # the timeout (0.5 s), not the server's 30 s
    assert len(ticks) == 5 and ticks[-1] - ticks[0] < 0.5  # the loop kept running meanwhile


def test_admits():
    assert admits("203.0.113.0/24", "203.0.113.7") and admits("0.0.0.0/0", "198.51.100.1")
    assert not admits("203.0.113.8/32", "203.0.113.7") and not admits("none", "203.0.113.7")
    assert not admits(None, "203.0.113.7")


def test_ssh_string_is_a_command_or_null_with_the_reason_beside_it(tmp_path):
    recorder = Recorder(Settings(_env_file=None), None, lambda ami: "ec2-user")  # type: ignore[arg-type]
    row = {"id": "i-0123456789abcdef0", "state": "running", "login_user": "ubuntu", "ssh_from": "203.0.113.7/32"}
    assert recorder.ssh_fields("198.51.100.9", row) == {
        "ssh_string": "ssh -i ~/.ssh/my_ec2_keypair.pem ubuntu@198.51.100.9", "ssh_unavailable": None}
    assert recorder.ssh_fields(None, row | {"associate_public_ip": 0}) == {
        "ssh_string": None, "ssh_unavailable": NO_PUBLIC_ADDRESS}
    assert recorder.ssh_fields(None, row | {"state": "stopped"})["ssh_unavailable"] == \
        "no public IPv4 address while it is stopped"
    none = recorder.ssh_fields("198.51.100.9", row | {"ssh_from": "none"})
    assert none["ssh_string"] is None and "ssh-access" in none["ssh_unavailable"]
