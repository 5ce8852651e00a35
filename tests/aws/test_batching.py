"""The pure logic of coalescing and splitting, with a stand-in runner that answers the way EC2 does."""

import asyncio

import pytest

from app.aws.batching import Coalescer, send
from app.core.errors import ApiError, Conflict, Unavailable

A, B, C, D = (f"i-{n:017x}" for n in range(1, 5))


class FakeEc2:
    """Refuses the calls that contain a refused id (with an error naming it, or not), answers the rest."""

    def __init__(self, refuse: dict[str, ApiError] | None = None, down: ApiError | None = None) -> None:
        self.refuse = refuse or {}
        self.down = down
        self.calls: list[list[str]] = []

    async def run(self, script, *ids, region=None, background=False):
        self.calls.append(list(ids))
        await asyncio.sleep(0)
        if self.down:
            raise self.down
        for instance_id in ids:
            if instance_id in self.refuse:
                raise self.refuse[instance_id]
        return {"StoppingInstances": [{"InstanceId": i, "CurrentState": {"Name": "stopping"}} for i in ids]}


def wrong_state(instance_id: str, named: bool = True) -> ApiError:
    who = f"'{instance_id}'" if named else "one of them"
    return Conflict(f"AWS said: This instance {who} is not in a state from which it can be stopped.",
                    code="wrong_state", aws_error_code="IncorrectInstanceState")


def test_an_id_the_error_names_is_left_out_and_the_rest_sent_again():
    ec2 = FakeEc2({B: wrong_state(B), D: wrong_state(D)})
    answered, failed = asyncio.run(send(ec2, "stop_instance.sh", "StoppingInstances", [A, B, C, D]))
    assert sorted(answered) == [A, C] and sorted(failed) == [B, D]
    assert ec2.calls == [[A, B, C, D], [A, C, D], [A, C]]


def test_a_per_instance_error_naming_nobody_is_retried_in_halves():
    ec2 = FakeEc2({B: wrong_state(B, named=False)})
    answered, failed = asyncio.run(send(ec2, "stop_instance.sh", "StoppingInstances", [A, B, C]))
    assert sorted(answered) == [A, C] and list(failed) == [B]
    assert ec2.calls == [[A, B, C], [A], [B, C], [B], [C]]


def test_capacity_for_one_instance_does_not_fail_the_others():
    capacity = Unavailable("AWS said: We currently do not have sufficient t3.micro capacity.", code="aws_capacity",
                           aws_error_code="InsufficientInstanceCapacity")
    ec2 = FakeEc2({D: capacity})
    answered, failed = asyncio.run(send(ec2, "start_instance.sh", "StoppingInstances", [A, B, C, D]))
    assert sorted(answered) == [A, B, C] and list(failed) == [D]
    assert len(ec2.calls) == 5  # [A B C D], [A B], [C D], [C], [D]


def test_an_error_naming_every_id_sends_nothing_more():
    both = Conflict(f"AWS said: The instance IDs '{A}, {B}' do not exist", code="instance_not_found",
                    aws_error_code="InvalidInstanceID.NotFound")
    ec2 = FakeEc2({A: both, B: both})
    answered, failed = asyncio.run(send(ec2, "stop_instance.sh", "StoppingInstances", [A, B]))
    assert answered == {} and sorted(failed) == [A, B] and ec2.calls == [[A, B]]


def test_an_error_about_everything_is_everyones_after_one_call():
    ec2 = FakeEc2(down=Unavailable("throttled", code="aws_throttled", aws_error_code="RequestLimitExceeded"))
    answered, failed = asyncio.run(send(ec2, "stop_instance.sh", "StoppingInstances", [A, B, A]))
    assert answered == {} and sorted(failed) == [A, B] and ec2.calls == [[A, B]]


def test_transitions_within_the_window_share_one_call_and_each_gets_its_own_answer():
    ec2 = FakeEc2({C: wrong_state(C)})
    coalescer = Coalescer(ec2, window_seconds=0.5)  # wide: a loaded machine must not split what is tested together

    async def scenario():
        stop = coalescer.submit("stop_instance.sh", "StoppingInstances", A, "us-east-1")
        first = [asyncio.ensure_future(stop), asyncio.ensure_future(
            coalescer.submit("stop_instance.sh", "StoppingInstances", B, "us-east-1"))]
        await asyncio.sleep(0.01)  # inside the window: joins the same call
        late = asyncio.ensure_future(coalescer.submit("stop_instance.sh", "StoppingInstances", C, "us-east-1"))
        other_region = asyncio.ensure_future(coalescer.submit("stop_instance.sh", "StoppingInstances", D, "eu-west-1"))
        return await asyncio.gather(*first, late, other_region, return_exceptions=True)

    a, b, c, d = asyncio.run(scenario())
    assert a["InstanceId"] == A and b["InstanceId"] == B and d["InstanceId"] == D
    assert isinstance(c, Conflict) and C in c.detail
    assert sorted(map(sorted, ec2.calls)) == [[A, B], sorted([A, B, C]), [D]]


@pytest.mark.parametrize("window", [0.0, 0.01])
def test_a_lone_transition_waits_at_most_the_window(window):
    ec2 = FakeEc2()
    coalescer = Coalescer(ec2, window_seconds=window)

    async def timed():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await coalescer.submit("stop_instance.sh", "StoppingInstances", A, None)
        return loop.time() - start

    assert asyncio.run(timed()) < window + 0.05
    assert ec2.calls == [[A]]
