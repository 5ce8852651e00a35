"""The only place that spawns processes: runs one bash script (one `aws` call) and parses it.

Scripts run as asyncio subprocesses (never a shell), with arguments as an argv array, a bounded
number at once (MAX_AWS_PROCESSES), each in its own process group so a timeout kills the whole
`bash -> aws` tree. AWS failures are turned into API errors with a clear status here.
"""

import asyncio
import heapq
import html
import itertools
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from app.config import SCRIPTS_DIR, Settings
from app.core.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Unavailable,
    UpstreamError,
    UpstreamTimeout,
)

log = logging.getLogger("ec2_creator.aws")

INLINE_PARSE_LIMIT = 64 * 1024
_AWS_ERROR = re.compile(r"An error occurred \(([^)]+)\)[^:]*:\s*(.*)", re.S)
# The CLI refused its command line (v1 exits 2, v2 252): "aws: error: argument operation: Invalid choice..."
_CLI_USAGE = re.compile(r"^aws: error: (.*)$", re.M)
CLI_USAGE_EXIT = {2, 252}

THROTTLING = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}
CAPACITY = {"InsufficientInstanceCapacity", "InsufficientCapacity", "InstanceLimitExceeded",
            "VcpuLimitExceeded", "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure"}
CREDENTIALS = {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "RequestExpired",
               "OptInRequired", "Blocked"}
# The credentials are good, but their policy does not allow this call: a missing IAM permission.
ACCESS_DENIED = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"}
# "... is not authorized to perform: ec2:RunInstances on resource: ..." (EC2, SSM, CloudWatch, STS alike)
_DENIED_ACTION = re.compile(r"not authorized to perform:? ([A-Za-z0-9-]+:[A-Za-z0-9*]+)")
_XML_ERROR = re.compile(r"<Code>([A-Za-z0-9.]+)</Code>\s*<Message>(.*?)</Message>", re.S)
_OPERATION = re.compile(r"when calling the (\w+) operation")
WRONG_STATE = {"IncorrectInstanceState", "IncorrectState", "InvalidInstanceState"}
NOT_FOUND = {"InvalidInstanceID.NotFound"}


def classify(script: str, returncode: int, stderr: str) -> ApiError:
    """Turn a failed script run into the API error a user can act on."""
    text = stderr.strip()
    match = _AWS_ERROR.search(text)
    if match:
        code, message = match.group(1), " ".join(match.group(2).split())
        if code.isdigit() and (inner := _XML_ERROR.search(message)):
            # An error body the CLI could not parse (an XML answer to a JSON-protocol call) is shown raw, under
            # the HTTP status: take AWS's own code and message from it.
            code, message = inner.group(1), html.unescape(inner.group(2))
        if code in ACCESS_DENIED or code == "403":
            return _access_denied(code, message, text)
        return _from_aws_code(code, message)
    usage = _CLI_USAGE.search(text)
    if usage and "invalid choice" in usage.group(1).lower():
        what = {"command": "AWS service", "operation": "operation"}.get(usage.group(1).split(":")[0].split()[-1],
                                                                         "command")
        return UpstreamError(f"This AWS CLI does not know the {what} that {script} calls: it is older than that "
                             "AWS API. Install a current AWS CLI v2 and point AWS_CLI at it.", code="aws_cli_outdated")
    if usage:
        return _rejected_arguments(script, returncode, text)
    lowered = text.lower()
    if "could not connect to the endpoint url" in lowered or "connection refused" in lowered:
        return Unavailable("The EC2 endpoint cannot be reached; check EC2_ENDPOINT_URL or your network, "
                           "then retry.", code="endpoint_unreachable", retry_after=5)
    if "the config profile" in lowered:
        return Unavailable(f"The AWS profile in AWS_PROFILE does not exist ({text.splitlines()[-1][:200]}): fix "
                           "AWS_PROFILE (environment or .env) or `aws configure --profile <name>`.",
                           code="no_credentials")
    if "unable to locate credentials" in lowered or "partial credentials" in lowered:
        return Unavailable("No AWS credentials found: configure AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                           "AWS_SECRET_ACCESS_KEY (see docs/QUICK_START.md).", code="no_credentials")
    if "timeout" in lowered or "timed out" in lowered:
        return UpstreamTimeout("The AWS call timed out; EC2 may still act on it. Retry in a moment.",
                               retry_after=5)
    if "you must specify a region" in lowered:
        return Unavailable("No AWS region set: set AWS_REGION or AWS_DEFAULT_REGION.", code="no_region")
    if returncode in CLI_USAGE_EXIT:
        return _rejected_arguments(script, returncode, text)
    first = text.splitlines()[-1] if text else f"exit code {returncode}"
    return UpstreamError(f"The AWS CLI failed: {first[:300]}", code="aws_cli_failed")


def _rejected_arguments(script: str, returncode: int, text: str) -> ApiError:
    """The script or the CLI refused the arguments: a bug on our side, never user-facing input."""
    log.error("%s rejected its arguments (exit %s): %s", script, returncode, text[-500:])
    return UpstreamError(f"Internal error: {script} rejected its arguments.", code="script_usage")


def _access_denied(code: str, message: str, text: str) -> ApiError:
    """A 403 naming the IAM action the credentials lack, and where the policy that grants it is."""
    named = _DENIED_ACTION.search(message)
    if named:
        # The emulator names CloudWatch actions by their signing name (monitoring:); IAM says cloudwatch:.
        action = re.sub(r"^monitoring:", "cloudwatch:", named.group(1))
        missing = f"the IAM permission {action}"
    else:
        operation = _OPERATION.search(text)
        missing = f"the IAM permission for {operation.group(1)}" if operation else "an IAM permission"
    return Forbidden(f"AWS denied {missing} to these credentials: add it to their IAM user or role, from "
                     f"docs/iam-policy.json (docs/IAM.md says which statement grants it). AWS said: {message[:400]}",
                     code="aws_access_denied", aws_error_code=code)


def _from_aws_code(code: str, message: str) -> ApiError:
    said = f"AWS said: {message[:400]}"
    if code in NOT_FOUND:
        return NotFound(f"EC2 has no such instance. {said}", code="instance_not_found", aws_error_code=code)
    if code in WRONG_STATE:
        return Conflict(f"The instance is in the wrong state for this. {said}", code="wrong_state",
                        aws_error_code=code)
    if code == "InvalidKeyPair.NotFound":
        return BadRequest("The key pair does not exist in this region. Create it with "
                          "`aws ec2 create-key-pair --key-name <KEY_NAME> --query KeyMaterial --output text "
                          "> ~/.ssh/<KEY_NAME>.pem` or set KEY_NAME to an existing one. " + said,
                          code="key_pair_missing", aws_error_code=code)
    if code in THROTTLING:
        return Unavailable(f"AWS is throttling requests; retry shortly. {said}", code="aws_throttled",
                           aws_error_code=code, retry_after=10)
    if code in CAPACITY:
        return Unavailable(f"EC2 cannot serve this right now (capacity or limit); retry later or pick another "
                           f"type. {said}", code="aws_capacity", aws_error_code=code, retry_after=30)
    if code in CREDENTIALS:
        return Unavailable(f"AWS refused the credentials; check AWS_PROFILE / access keys (expired or wrong?). "
                           f"{said}", code="aws_credentials", aws_error_code=code)
    if code.startswith(("Invalid", "Missing", "Unsupported")) or code.endswith(".Malformed") \
            or code == "ValidationError":
        return BadRequest(f"EC2 rejected a parameter; fix the request and retry. {said}", code="aws_bad_parameter",
                          aws_error_code=code)
    return UpstreamError(f"EC2 refused the request. {said}", aws_error_code=code)


SERVER_SIDE = {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"}


def outcome_unknown(exc: ApiError) -> bool:
    """Whether EC2 may have acted on a call that failed: it timed out, the CLI broke off, its answer
    was unreadable, or EC2 failed on its side. Everything else is a refusal (or nothing was sent)."""
    return (exc.status_code == 504 or exc.code in ("aws_cli_failed", "aws_bad_output")
            or exc.aws_error_code in SERVER_SIDE)


def _default_aws_cli(configured: str) -> str:
    """`aws` next to this interpreter (the venv's) when the setting is the bare default."""
    if configured == "aws":
        candidate = Path(sys.executable).parent / "aws"
        if candidate.exists():
            return str(candidate)
    return configured


class _Slots:
    """At most N `aws` processes at once. Waiters are served background-first (a sweep never queues
    behind a crowd of user calls), then in arrival order; a wait is bounded by the caller's deadline."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int, timeout: float) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._order), waiter)
        heapq.heappush(self._waiters, entry)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
            return True
        except TimeoutError:
            self._abandon(entry)
            return False
        except BaseException:
            self._abandon(entry)
            raise

    def _abandon(self, entry: tuple[int, int, asyncio.Future]) -> None:
        waiter = entry[2]
        if waiter.done() and not waiter.cancelled():
            self.release()  # handed a slot just as we gave up: pass it on
        else:
            waiter.cancel()
            self._waiters.remove(entry)
            heapq.heapify(self._waiters)

    def release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


def child_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every `aws` child: the server's own, plus every AWS setting the server read
    (from the environment or `.env`), so what the server logs is what the CLI uses."""
    env = dict(os.environ if base is None else base)
    env["AWS_CLI"] = _default_aws_cli(settings.aws_cli)
    env["KEY_NAME"] = settings.key_name
    env["AWS_PAGER"] = ""
    env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = settings.region  # the scripts pass --region
    env["AWS_CLI_CONNECT_TIMEOUT"] = str(settings.aws_cli_connect_timeout)
    env["AWS_CLI_READ_TIMEOUT"] = str(settings.aws_cli_read_timeout)
    secrets = {"AWS_PROFILE": settings.aws_profile, "AWS_ACCESS_KEY_ID": settings.aws_access_key_id,
               "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key,
               "AWS_SESSION_TOKEN": settings.aws_session_token}
    for name, value in secrets.items():
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        if plain:
            env[name] = plain
        else:
            env.pop(name, None)
    if settings.ec2_endpoint_url:
        env["EC2_ENDPOINT_URL"] = settings.ec2_endpoint_url
    else:
        env.pop("EC2_ENDPOINT_URL", None)
    return env


USER, BACKGROUND = 1, 0  # slot priorities: sweeps first
SLOT_WAIT_SHARE = 0.5  # of AWS_CLI_TIMEOUT_SECONDS, at most spent waiting for a slot


class AwsCli:
    """Runs aws_cli_bash_scripts/*.sh: one script, one `aws` process, JSON back."""

    def __init__(self, settings: Settings,
                 on_process: Callable[[str, str, float], None] = lambda script, outcome, seconds: None) -> None:
        self.settings = settings
        self.on_process = on_process  # (script, "ok" or the error code, seconds): the metrics
        self.timeout = settings.aws_cli_timeout_seconds
        self._slots = _Slots(settings.max_aws_processes)
        # `nice` execs the script (no extra process): the CPU-bound `aws` children yield to the
        # server's event loop, so /health and reads stay fast while creates run.
        nice = shutil.which("nice")
        self._nice = [nice, "-n", "10"] if nice else []
        self.env = child_env(settings)

    async def version(self) -> str:
        """What `AWS_CLI --version` prints (e.g. aws-cli/2.9.19 Python/3.11.2 ...): one process."""
        if not await self._slots.acquire(BACKGROUND, self.timeout * SLOT_WAIT_SHARE):
            raise Unavailable("No AWS CLI slot for `aws --version`.", code="aws_busy", retry_after=5)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.env["AWS_CLI"], "--version", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=self.env, start_new_session=True)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
            except BaseException:
                _kill_group(proc)
                await proc.wait()
                raise
        except TimeoutError:
            raise UpstreamTimeout(f"`{self.env['AWS_CLI']} --version` did not answer within {self.timeout:g} s.") \
                from None
        except OSError as exc:  # after TimeoutError, one of its kind
            raise UpstreamError(f"AWS_CLI={self.env['AWS_CLI']} cannot be run: {exc.strerror}",
                                code="aws_cli_missing") from None
        finally:
            self._slots.release()
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0 or not text.startswith("aws-cli/"):
            raise UpstreamError(f"AWS_CLI={self.env['AWS_CLI']} is not an AWS CLI (`--version` said "
                                f"{text[:200]!r}, exit {proc.returncode}).", code="aws_cli_missing")
        return text.splitlines()[0]

    async def run(self, script: str, *args: str, region: str | None = None, background: bool = False) -> dict:
        """Run one script with argv `args`; return its JSON stdout or raise an ApiError.

        The whole call, waiting for a free slot included, ends within AWS_CLI_TIMEOUT_SECONDS: a call
        that found no slot within half of it is a 503 (nothing was sent to AWS), so the process always
        has at least the other half; one that runs past the deadline is a 504.
        `region` overrides the configured region for this call (an instance recorded in another one).
        """
        path = SCRIPTS_DIR / script
        deadline = time.monotonic() + self.timeout
        if not await self._slots.acquire(BACKGROUND if background else USER, self.timeout * SLOT_WAIT_SHARE):
            raise Unavailable(f"All {self.settings.max_aws_processes} AWS CLI slots (MAX_AWS_PROCESSES) stayed "
                              f"busy for {self.timeout * SLOT_WAIT_SHARE:g} s; nothing was sent to AWS. Retry "
                              "shortly.", code="aws_busy", retry_after=5)
        env = self.env if region in (None, self.settings.region) else {**self.env, "AWS_REGION": region,
                                                                        "AWS_DEFAULT_REGION": region}
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._nice, str(path), *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), max(deadline - time.monotonic(), 0.1))
            except TimeoutError:
                _kill_group(proc)
                await proc.wait()
                self.on_process(script, "timeout", time.monotonic() - started)
                raise UpstreamTimeout(f"The AWS call ({script}) did not finish within {self.timeout:g} s; "
                                      "EC2 may still act on it. Retry in a moment.", retry_after=5) from None
            except BaseException:
                _kill_group(proc)
                await proc.wait()
                raise
        finally:
            self._slots.release()
        stderr = err.decode(errors="replace")
        returncode = proc.returncode if proc.returncode is not None else -1
        if returncode != 0:
            error = classify(script, returncode, stderr)
            self.on_process(script, error.code, time.monotonic() - started)
            log.warning("%s failed (exit %s): %s", script, proc.returncode, error.detail)
            raise error
        self.on_process(script, "ok", time.monotonic() - started)
        if not out.strip():
            return {}
        try:
            if len(out) > INLINE_PARSE_LIMIT:  # a big describe (1,000 instances is ~MBs): off the loop
                doc = await asyncio.to_thread(json.loads, out)
            else:
                doc = json.loads(out)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UpstreamError(f"The AWS CLI ({script}) printed something that is not JSON.",
                                code="aws_bad_output") from None
        if not isinstance(doc, dict):
            raise UpstreamError(f"The AWS CLI ({script}) printed JSON that is not an object.",
                                code="aws_bad_output")
        return doc


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
