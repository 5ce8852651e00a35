"""Waiting, with progress on stderr and a deadline (exit 4): for an instance to run (reading the API's record, no
`aws` process), and for its sshd to let us in."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ec2cl import names, ssh
from ec2cl.client import Api
from ec2cl.errors import REFUSED, TIMED_OUT, CliError

POLL_SECONDS = 2.0
ENDED = ("shutting-down", "terminated")


@dataclass
class Deadline:
    seconds: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()


def _timed_out(what: str, deadline: Deadline) -> CliError:
    return CliError(f"{what} after {deadline.seconds:g} s (--timeout)", TIMED_OUT, "timed_out")


def until_state(api: Api, instance: dict, wanted: str, deadline: Deadline, say: Callable[[str], None],
                sleep: Callable[[float], None] = time.sleep) -> dict:
    """The instance once the record shows `wanted` (running or stopped). An instance that ends, or settles in the
    other state, is a refusal (exit 1): waiting longer would not help."""
    other = "stopped" if wanted == "running" else "running"
    shown = None
    while True:
        state = instance["state"]
        if state == wanted:
            return instance
        if state in ENDED or state == other:
            raise CliError(f"{names.label(instance)} is {state}, not {wanted}", REFUSED, "wrong_state")
        if state != shown:
            say(f"{names.label(instance)} is {state}; waiting until it is {wanted} ({deadline.elapsed():.0f} s)")
            shown = state
        if deadline.left() <= 0:
            raise _timed_out(f"{names.label(instance)} was still {state}", deadline)
        sleep(min(POLL_SECONDS, max(deadline.left(), 0.1)))
        instance = api.get(names.path(instance))


def until_ssh(instance: dict, key: Path, deadline: Deadline, say: Callable[[str], None],
              sleep: Callable[[float], None] = time.sleep) -> None:
    """Until `ssh ... true` gets in (the same options as the session), or the deadline."""
    shown = None
    while True:
        connect = int(max(1, min(10, deadline.left())))
        result = ssh.probe(instance, key, connect)
        if result.ready:
            if shown is not None:
                say(f"ssh answers after {deadline.elapsed():.0f} s")
            return
        if result.fatal:
            raise CliError(f"ssh to {names.label(instance)}: {result.reason}", REFUSED, "ssh_failed")
        if result.reason != shown:
            say(f"waiting for ssh on {instance['public_ip']}:22: {result.reason} ({deadline.elapsed():.0f} s)")
            shown = result.reason
        if deadline.left() <= 0:
            hint = ""
            if "Permission denied" in result.reason:
                hint = (f" (logging in as {instance.get('login_user') or 'ec2-user'} with {key}: is that the key "
                        "pair's private key? --identity names another)")
            raise _timed_out(f"ssh to {names.label(instance)} still failed: {result.reason}{hint}", deadline)
        sleep(min(POLL_SECONDS, max(deadline.left(), 0.1)))
