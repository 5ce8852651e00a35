"""A real moto server on 127.0.0.1 (the local EC2), plus a boto3 client to look at EC2's side."""

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.processes import TLS, VENV_BIN, free_port, safe_env, stop_process, wait_http

KEY_NAME = "my_ec2_keypair"
# Make the emulator refuse what AWS refuses: unknown key pairs, AMIs and instance types.
STRICT_MOTO = {"MOTO_ENABLE_KEYPAIR_VALIDATION": "true", "MOTO_ENABLE_AMI_VALIDATION": "true",
               "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true"}


class Emulator:
    """A moto server on 127.0.0.1 (on a port it keeps across restarts), plus boto3 clients to check
    EC2's side of things. It can be stopped (connection refused), paused (a call that hangs: the
    kernel still accepts connections) and started again, empty, on the same port."""

    def __init__(self, tmp: Path, url: str | None = None) -> None:
        """Start one; or, given the `url` of one already running (the test session's, for the bench smoke), use
        and reset it but never start or stop it."""
        self.tmp = tmp
        self.port = int(url.rsplit(":", 1)[1]) if url else free_port()
        self.url = url or f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.paused = False
        import boto3  # moto's dependency; used only to look at the emulator

        os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        self.ec2 = boto3.client("ec2", endpoint_url=self.url, region_name="us-east-1",
                                aws_access_key_id="testing", aws_secret_access_key="testing")
        self.ssm = boto3.client("ssm", endpoint_url=self.url, region_name="us-east-1",
                                aws_access_key_id="testing", aws_secret_access_key="testing")
        self.cloudwatch = boto3.client("cloudwatch", endpoint_url=self.url, region_name="us-east-1",
                                       aws_access_key_id="testing", aws_secret_access_key="testing")
        if url is None:
            self.start()

    def start(self) -> None:
        """Start a new, empty moto server with our key pair; its EC2 backend loads now, not on a test's clock."""
        with open(self.tmp / f"moto-{time.time_ns()}.log", "wb") as log:
            self.proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, env=safe_env(**STRICT_MOTO),
                                         start_new_session=True)
        wait_http(f"{self.url}/moto-api/", proc=self.proc)
        self.ec2.create_key_pair(KeyName=KEY_NAME)
        self.ec2.describe_instances()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self.resume()
        if self.proc is not None:
            stop_process(self.proc)
        self.proc = None

    close = stop

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel, nothing ever answers."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def reset(self) -> None:
        httpx.post(f"{self.url}/moto-api/reset", timeout=30, verify=TLS).raise_for_status()
        self.ec2.create_key_pair(KeyName=KEY_NAME)

    def instances(self, managed_only: bool = False) -> dict[str, dict]:
        filters = [{"Name": "tag:ManagedBy", "Values": ["ec2-creator-local"]}] if managed_only else []
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return {i["InstanceId"]: i for page in pages for r in page["Reservations"] for i in r["Instances"]}

    def alarms(self, prefix: str = "ec2-creator-local-idle-stop-") -> dict[str, dict]:
        """CloudWatch's metric alarms whose name begins with `prefix`, by name."""
        pages = self.cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix)
        return {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}

    def ami(self, param: str = "al2023-ami-kernel-default-x86_64") -> str:
        name = f"/aws/service/ami-amazon-linux-latest/{param}"
        return self.ssm.get_parameter(Name=name)["Parameter"]["Value"]
