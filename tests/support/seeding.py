"""Instances a test needs as setup, not as its subject: launched straight in the emulator, adopted by a sync.

Why: a create through the API costs four `aws` processes (its SSH group, the rule, the launch, the sweep after
it; tests/test_lifecycle.py and test_api.py test creating), and `aws` processes are most of the suite's time
(issue 26). An instance launched with boto3 in the moto emulator costs none, and one `POST /instances/sync` (one
`aws` process) adopts every instance with our ManagedBy tag. Use it only where the test does not depend on what
an API create records and a sweep does not (owner, SSH group, a create's events, ...).
"""

from collections.abc import Collection, Mapping

import httpx

from tests.support.emulator import Emulator
from tests.support.processes import wait_until

MANAGED_BY = {"Key": "ManagedBy", "Value": "ec2-creator-local"}


def launch_managed(emulator: Emulator, count: int = 1, *, name: str | None, instance_type: str = "t3.micro",
                   tags: Mapping[str, str] | None = None, public_ip: bool = True) -> list[str]:
    """Launch `count` running instances in the emulator with our ManagedBy tag, the Name tag `name` (None: no
    Name tag, the record is then named by its id) and `tags`; `public_ip=False` launches them without a public
    address. Returns their ids; no server tracks them until a sweep adopts them (adopt())."""
    named = [] if name is None else [{"Key": "Name", "Value": name}]
    spec = [{"ResourceType": "instance", "Tags": [
        MANAGED_BY, *named, *({"Key": key, "Value": value} for key, value in (tags or {}).items())]}]
    network = {} if public_ip else {"NetworkInterfaces": [{"DeviceIndex": 0, "AssociatePublicIpAddress": False}]}
    launched = emulator.ec2.run_instances(ImageId=emulator.ami(), InstanceType=instance_type, MinCount=count,
                                          MaxCount=count, TagSpecifications=spec, **network)
    return [i["InstanceId"] for i in launched["Instances"]]


def adopt(client: httpx.Client, ids: Collection[str] | Mapping[str, str], state: str | None = "running", *,
          timeout: float = 30, interval: float = 0.2) -> list[dict]:
    """Sync through `client` until the record holds each of `ids` in `state` (None: in any state; a mapping of
    id to state: each in its own), and return their records. None is synced if the record holds them already (a
    server's start-up or periodic sweep may have adopted them); else a sync adopts them, and another if it joined
    a sweep under way that listed EC2 before the launch."""
    wanted = dict(ids) if isinstance(ids, Mapping) else dict.fromkeys(ids, state)

    def recorded() -> bool:
        for instance_id, want in wanted.items():
            got = client.get(f"/instances/{instance_id}")
            if got.status_code != 200 or want not in (None, got.json().get("state")):
                client.post("/instances/sync").raise_for_status()
                return False
        return True

    wait_until(recorded, timeout=timeout, interval=interval)
    return [client.get(f"/instances/{i}").json() for i in wanted]
