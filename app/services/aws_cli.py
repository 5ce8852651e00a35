"""The only place that spawns processes: runs one bash script (one `aws` call) and parses it.

Scripts run as asyncio subprocesses (never a shell), with arguments as an argv array, a bounded
number at once (MAX_AWS_PROCESSES), each in its own process group so a timeout kills the whole
`bash -> aws` tree. AWS failures are turned into API errors with a clear status here.
"""

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path

from app.config import SCRIPTS_DIR, Settings
from app.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable, UpstreamError, UpstreamTimeout

log = logging.getLogger("ec2_creator.aws")

INLINE_PARSE_LIMIT = 64 * 1024
_AWS_ERROR = re.compile(r"An error occurred \(([^)]+)\)[^:]*:\s*(.*)", re.S)

THROTTLING = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"}
CAPACITY = {"InsufficientInstanceCapacity", "InsufficientCapacity", "InstanceLimitExceeded",
            "VcpuLimitExceeded", "ServiceUnavailable", "Unavailable", "InternalError", "InternalFailure"}
CREDENTIALS = {"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
               "ExpiredToken", "RequestExpired", "OptInRequired", "Blocked"}
WRONG_STATE = {"IncorrectInstanceState", "IncorrectState", "InvalidInstanceState"}
NOT_FOUND = {"InvalidInstanceID.NotFound"}


class AwsCallError(ApiError):
    """An `aws` call that failed; carries the AWS error code when AWS answered."""


def classify(script: str, returncode: int, stderr: str) -> ApiError:
    """Turn a failed script run into the API error a user can act on."""
    text = stderr.strip()
    match = _AWS_ERROR.search(text)
    if match:
        code, message = match.group(1), " ".join(match.group(2).split())
        return _from_aws_code(code, message)
    lowered = text.lower()
    if "could not connect to the endpoint url" in lowered or "connection refused" in lowered:
        return Unavailable("The EC2 endpoint cannot be reached; check EC2_ENDPOINT_URL or your network, "
                           "then retry.", code="endpoint_unreachable", retry_after=5)
    if "unable to locate credentials" in lowered or "partial credentials" in lowered \
            or "the config profile" in lowered:
        return Unavailable("No AWS credentials found: configure AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                           "AWS_SECRET_ACCESS_KEY (see docs/QUICK_START.md).", code="no_credentials")
    if "timeout" in lowered or "timed out" in lowered:
        return UpstreamTimeout("The AWS call timed out; EC2 may still act on it. Retry in a moment.",
                               retry_after=5)
    if "you must specify a region" in lowered:
        return Unavailable("No AWS region set: set AWS_REGION or AWS_DEFAULT_REGION.", code="no_region")
    if returncode == 2:
        # The script refused its arguments: a bug on our side, never user-facing input.
        log.error("%s rejected its arguments: %s", script, text)
        return UpstreamError(f"Internal error: {script} rejected its arguments.", code="script_usage")
    first = text.splitlines()[-1] if text else f"exit code {returncode}"
    return UpstreamError(f"The AWS CLI failed: {first[:300]}", code="aws_cli_failed")


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
        return Unavailable(f"AWS refused the credentials; check AWS_PROFILE / access keys and permissions. "
                           f"{said}", code="aws_credentials", aws_error_code=code)
    if code.startswith(("Invalid", "Missing", "Unsupported")) or code.endswith(".Malformed") \
            or code == "ValidationError":
        return BadRequest(f"EC2 rejected a parameter; fix the request and retry. {said}", code="aws_bad_parameter",
                          aws_error_code=code)
    return UpstreamError(f"EC2 refused the request. {said}", aws_error_code=code)


def _default_aws_cli(configured: str) -> str:
    """`aws` next to this interpreter (the venv's) when the setting is the bare default."""
    if configured == "aws":
        candidate = Path(sys.executable).parent / "aws"
        if candidate.exists():
            return str(candidate)
    return configured


class AwsCli:
    """Runs aws_cli_bash_scripts/*.sh: one script, one `aws` process, JSON back."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.aws_cli_timeout_seconds
        self._slots = asyncio.Semaphore(settings.max_aws_processes)
        # `nice` execs the script (no extra process): the CPU-bound `aws` children yield to the
        # server's event loop, so /health and reads stay fast while creates run.
        nice = shutil.which("nice")
        self._nice = [nice, "-n", "10"] if nice else []
        env = dict(os.environ)
        env["AWS_CLI"] = _default_aws_cli(settings.aws_cli)
        env["KEY_NAME"] = settings.key_name
        env["AWS_PAGER"] = ""
        env.setdefault("AWS_DEFAULT_REGION", settings.region)
        if settings.ec2_endpoint_url:
            env["EC2_ENDPOINT_URL"] = settings.ec2_endpoint_url
        else:
            env.pop("EC2_ENDPOINT_URL", None)
        self.env = env

    async def run(self, script: str, *args: str) -> dict:
        """Run one script with argv `args`; return its JSON stdout or raise an ApiError."""
        path = SCRIPTS_DIR / script
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                *self._nice, str(path), *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
            except asyncio.TimeoutError:
                _kill_group(proc)
                await proc.wait()
                raise UpstreamTimeout(f"The AWS call ({script}) did not finish within {self.timeout:g} s; "
                                      "EC2 may still act on it. Retry in a moment.", retry_after=5) from None
            except BaseException:
                _kill_group(proc)
                await proc.wait()
                raise
        stderr = err.decode(errors="replace")
        if proc.returncode != 0:
            error = classify(script, proc.returncode, stderr)
            log.warning("%s failed (exit %s): %s", script, proc.returncode, error.detail)
            raise error
        if not out.strip():
            return {}
        try:
            if len(out) > INLINE_PARSE_LIMIT:  # a big describe (1,000 instances is ~MBs): off the loop
                return await asyncio.to_thread(json.loads, out)
            return json.loads(out)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UpstreamError(f"The AWS CLI ({script}) printed something that is not JSON.",
                                code="aws_bad_output") from None


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
