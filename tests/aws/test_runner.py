"""Unit tests of how a failed `aws` run maps to an API error (stderr texts as the CLI prints them)."""

import pytest

from app.aws.runner import classify


def aws_error(code: str, op: str = "RunInstances", msg: str = "details") -> str:
    return f"\nAn error occurred ({code}) when calling the {op} operation: {msg}\n"


@pytest.mark.parametrize("code, status, machine", [
    ("InvalidInstanceID.NotFound", 404, "instance_not_found"),
    ("IncorrectInstanceState", 409, "wrong_state"),
    ("InvalidKeyPair.NotFound", 400, "key_pair_missing"),
    ("InvalidParameterValue", 400, "aws_bad_parameter"),
    ("InvalidAMIID.Malformed", 400, "aws_bad_parameter"),
    ("MissingParameter", 400, "aws_bad_parameter"),
    ("InsufficientInstanceCapacity", 503, "aws_capacity"),
    ("RequestLimitExceeded", 503, "aws_throttled"),
    ("AuthFailure", 503, "aws_credentials"),
    ("SomethingNew", 502, "aws_error"),
])
def test_aws_error_codes(code, status, machine):
    error = classify("create_instance.sh", 254, aws_error(code))
    assert (error.status_code, error.code, error.aws_error_code) == (status, machine, code)
    assert "details" in error.detail


@pytest.mark.parametrize("code, op, msg, action", [
    ("UnauthorizedOperation", "RunInstances", "You are not authorized to perform this operation. User: "
     "arn:aws:iam::123456789012:user/ec2 is not authorized to perform: ec2:RunInstances on resource: "
     "arn:aws:ec2:us-east-1:123456789012:instance/* because no identity-based policy allows the ec2:RunInstances "
     "action. Encoded authorization failure message: AbC", "ec2:RunInstances"),
    ("AccessDeniedException", "GetParameters", "User: arn:aws:iam::123456789012:user/ec2 is not authorized to "
     "perform: ssm:GetParameters on resource: arn:aws:ssm:us-east-1::parameter/aws/service/x", "ssm:GetParameters"),
    ("AccessDenied", "PutMetricAlarm", "User: arn:aws:iam::123456789012:user/ec2 is not authorized to perform: "
     "monitoring:PutMetricAlarm", "cloudwatch:PutMetricAlarm"),  # the emulator's signing name, IAM's name shown
    ("AccessDenied", "DescribeAlarms", "Access denied", "the IAM permission for DescribeAlarms"),
    # An XML error body to a JSON-protocol call (the CloudWatch emulator): the CLI shows it raw, under the status.
    ("403", "GetMetricStatistics", '<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>'
     "AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/ec2 is not authorized to perform: "
     "monitoring:GetMetricStatistics</Message><Type>Sender</Type></Error></Errors></ErrorResponse>",
     "cloudwatch:GetMetricStatistics"),
])
def test_a_missing_permission_is_403_naming_the_action(code, op, msg, action):
    error = classify("x.sh", 254, aws_error(code, op, msg))
    assert (error.status_code, error.code, error.aws_error_code) == (403, "aws_access_denied",
                                                                     "AccessDenied" if code == "403" else code)
    assert action in error.detail and "<" not in error.detail and "docs/iam-policy.json" in error.detail


@pytest.mark.parametrize("code", ["AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken"])
def test_bad_or_expired_credentials_stay_503(code):
    error = classify("x.sh", 254, aws_error(code))
    assert (error.status_code, error.code) == (503, "aws_credentials")


def test_key_pair_error_says_how_to_fix_it():
    assert "create-key-pair" in classify("x", 254, aws_error("InvalidKeyPair.NotFound")).detail


def test_throttling_and_capacity_carry_retry_after():
    assert classify("x", 254, aws_error("Throttling")).retry_after
    assert classify("x", 254, aws_error("InsufficientInstanceCapacity")).retry_after


@pytest.mark.parametrize("stderr, status, machine", [
    ('\nCould not connect to the endpoint URL: "http://127.0.0.1:9/"\n', 503, "endpoint_unreachable"),
    ("\nUnable to locate credentials. You can configure credentials by running \"aws configure\".\n", 503,
     "no_credentials"),
    ('\nRead timeout on endpoint URL: "https://ec2.us-east-1.amazonaws.com/"\n', 504, "aws_timeout"),
    ("\nYou must specify a region. You can also configure your region by running \"aws configure\".\n", 503,
     "no_region"),
    ("create_instance.sh: --name is required\n", 502, "script_usage"),
])
def test_non_aws_failures(stderr, status, machine):
    rc = 2 if "required" in stderr else 255
    error = classify("create_instance.sh", rc, stderr)
    assert (error.status_code, error.code) == (status, machine)


USAGE = "usage: aws [options] <command> <subcommand> [<subcommand> ...] [parameters]\n"


@pytest.mark.parametrize("rc, stderr, machine", [
    # The CLI refused our command line: v1 exits 2, v2 252; either way a bug of ours, not the user's.
    (2, USAGE + "aws: error: the following arguments are required: --instance-ids\n", "script_usage"),
    (252, USAGE + "aws: error: the following arguments are required: --instance-ids\n", "script_usage"),
    (252, "", "script_usage"),
    # An older CLI that lacks a service or an operation: say so, and how to fix it.
    (252, USAGE + "aws: error: argument command: Invalid choice, valid choices are:\n\nec2 | s3\n", "aws_cli_outdated"),
    (2, USAGE + "aws: error: argument operation: Invalid choice, valid choices are:\n", "aws_cli_outdated"),
    # v2's exit 254 and v1's 255 for the same AWS error.
    (254, "\nAn error occurred (InvalidInstanceID.NotFound) when calling the StartInstances operation: x\n",
     "instance_not_found"),
    (255, "\nAn error occurred (InvalidInstanceID.NotFound) when calling the StartInstances operation: x\n",
     "instance_not_found"),
])
def test_cli_v1_and_v2_exit_codes(rc, stderr, machine):
    error = classify("start_instance.sh", rc, stderr)
    assert error.code == machine
    if machine == "aws_cli_outdated":
        kind = "AWS service" if "argument command" in stderr else "operation"
        assert f"does not know the {kind} that start_instance.sh calls" in error.detail


# -- the slots that bound how many `aws` processes run at once ---------------------------------------
def test_slots_serve_background_first_then_in_arrival_order():
    import asyncio

    from app.aws.runner import BACKGROUND, USER, _Slots

    async def scenario() -> list[str]:
        slots = _Slots(1)
        order: list[str] = []
        assert await slots.acquire(USER, 1)

        async def waiter(name: str, priority: int) -> None:
            assert await slots.acquire(priority, 5)
            order.append(name)
            await asyncio.sleep(0)
            slots.release()

        tasks = [asyncio.create_task(waiter("user-1", USER)), asyncio.create_task(waiter("user-2", USER))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(waiter("sweep", BACKGROUND)))
        await asyncio.sleep(0.01)
        slots.release()
        await asyncio.gather(*tasks)
        assert slots.free == 1
        return order

    assert asyncio.run(scenario()) == ["sweep", "user-1", "user-2"]


def test_a_slot_wait_times_out_and_a_cancelled_waiter_leaks_nothing():
    import asyncio

    from app.aws.runner import USER, _Slots

    async def scenario() -> None:
        slots = _Slots(1)
        assert await slots.acquire(USER, 1)
        assert await slots.acquire(USER, 0.05) is False  # no slot within the wait: the caller answers 503
        cancelled = asyncio.create_task(slots.acquire(USER, 5))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        slots.release()
        assert slots.free == 1 and not slots._waiters
        assert await slots.acquire(USER, 0.05)

    asyncio.run(scenario())


def test_a_missing_profile_names_itself():
    error = classify("list_instances.sh", 255, "\nThe config profile (work) could not be found\n")
    assert (error.status_code, error.code) == (503, "no_credentials") and "work" in error.detail
