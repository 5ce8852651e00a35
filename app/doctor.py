"""`make doctor`: would a create work? One line per check, in order, each `ok`, `warn`, `FAIL` or `skip`,
and for anything not ok the command or setting that fixes it.

It reads the same settings and `.env` as the server and runs the same scripts (through AwsCli), only ones
that read: it never changes anything in AWS. Exit 0 when a create would work, 1 otherwise; every AWS call
is bounded (CALL_TIMEOUT_SECONDS), and an endpoint or credentials that fail stop the AWS checks at once.

    python -m app.doctor [--api-url URL]      (scripts/doctor.sh; make doctor [EC2_TARGET=aws])
"""

import argparse
import asyncio
import logging
import os
import stat
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from app.aws.runner import AwsCli
from app.budget.spending import parse_account_plan
from app.config import Settings, describe_errors
from app.core.errors import ApiError
from app.instances.free_tier import ALIASES, Catalog
from app.instances.ssh_access import MyIp, admits
from app.lifespan import SETTINGS_CHECKS
from app.notifications.service import DeliveryError, check_smtp, scheme_of
from app.store import is_postgres_url, open_database

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
CALL_TIMEOUT_SECONDS = 20.0
HEALTH_TIMEOUT_SECONDS = 2.0


@dataclass
class Line:
    status: str
    name: str
    text: str
    fix: str | None = None

    def render(self) -> str:
        return f"{self.status:<4} {self.name}: {self.text}" + (f" -> fix: {self.fix}" if self.fix else "")


class Doctor:
    def __init__(self, settings: Settings, api_url: str) -> None:
        self.settings = settings
        self.api_url = api_url.rstrip("/")
        timeout = min(settings.aws_cli_timeout_seconds, CALL_TIMEOUT_SECONDS)
        self.aws = AwsCli(settings.model_copy(update={"aws_cli_timeout_seconds": timeout}))
        self.region = settings.region
        self.sandbox = bool(settings.ec2_endpoint_url)

    def aws_command(self, *args: str) -> str:
        """An `aws` command line for a fix, aimed where the server aims (region, emulator endpoint)."""
        endpoint = self.settings.ec2_endpoint_url
        target = ["--endpoint-url", endpoint] if endpoint else []
        return " ".join(["aws", *target, "--region", self.region, *args])

    async def run(self) -> list[Line]:
        lines = [await self.cli(), self.target(), self.region_line()]
        if lines[0].status == FAIL:
            return [*lines, Line(SKIP, "AWS checks", "need a working AWS CLI")]
        identity = await self.credentials()
        lines.append(identity)
        if identity.status == FAIL:
            return [*lines, Line(SKIP, "AWS checks", "key pair, default VPC, types, AMIs: need the line above fixed"),
                    self.private_key(), await self.email(), self.urls(), await self.api()]
        key_pair, subnets, catalog, plan, email, ssh = await asyncio.gather(
            self.key_pair(), self.subnets(), self.catalog(), self.plan(), self.email(), self.ssh_access())
        return [*lines, key_pair, self.private_key(), subnets, *catalog, plan, email, ssh, self.urls(),
                await self.api()]

    async def cli(self) -> Line:
        path = self.aws.env["AWS_CLI"]
        try:
            version = await self.aws.version()
        except ApiError as exc:
            return Line(FAIL, "aws", exc.detail, "set AWS_CLI to the aws executable (`command -v aws`), or run "
                                                 "`make venv` for the project's own")
        note = " (v1: in maintenance mode since 15 July 2026; AWS_CLI can name a v2)" \
            if version.startswith("aws-cli/1.") else ""
        return Line(OK, "aws", f"{path}: {version.split()[0]}{note}")

    def target(self) -> Line:
        budget = f"; budget {self.settings.budget_usd:.2f} USD a month ({self.settings.budget_from})"
        if self.sandbox:
            return Line(OK, "target", f"SANDBOX, the local EC2 emulator at {self.settings.ec2_endpoint_url} "
                                      f"(no AWS account is used){budget}")
        return Line(OK, "target", "AWS, the real account of these credentials: running boxes use its credits, "
                                  f"then its money{budget}")

    def region_line(self) -> Line:
        source = ("AWS_REGION" if self.settings.aws_region else "AWS_DEFAULT_REGION"
                  if self.settings.aws_default_region else "the default; set AWS_REGION to choose")
        return Line(OK, "region", f"{self.region} ({source})")

    async def credentials(self) -> Line:
        try:
            doc = await self.aws.run("get_caller_identity.sh")
        except ApiError as exc:
            if exc.code == "endpoint_unreachable":
                where = self.settings.ec2_endpoint_url or "the AWS endpoint"
                return Line(FAIL, "endpoint", f"{where} cannot be reached ({exc.detail})", self.credentials_fix(exc))
            return Line(FAIL, "credentials", exc.detail, self.credentials_fix(exc))
        return Line(OK, "credentials", f"account {doc.get('Account')}, {doc.get('Arn')}")

    def credentials_fix(self, exc: ApiError) -> str:
        if exc.code == "endpoint_unreachable":
            return ("start the emulator: `make sandbox` (or `make run`)" if self.sandbox else
                    "check the network and any HTTPS_PROXY; `aws sts get-caller-identity` must answer")
        if exc.code == "no_region":
            return "set AWS_REGION (e.g. AWS_REGION=us-east-1 in .env)"
        if exc.code in ("no_credentials", "aws_credentials"):
            return ("`aws configure` (or `aws sso login --profile NAME` and AWS_PROFILE=NAME in .env), or "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in .env")
        if exc.code == "aws_timeout":
            return "check the network; AWS_CLI_CONNECT_TIMEOUT and AWS_CLI_READ_TIMEOUT bound each call"
        return "run `aws sts get-caller-identity` with the same settings to see the whole error"

    async def key_pair(self) -> Line:
        name = self.settings.key_name
        try:
            doc = await self.aws.run("describe_key_pairs.sh", "--key-name", name)
        except ApiError as exc:
            return Line(FAIL, "key pair", f"could not look up KEY_NAME={name}: {exc.detail}")
        if any(k.get("KeyName") == name for k in doc.get("KeyPairs") or []):
            return Line(OK, "key pair", f"{name} exists in {self.region}")
        path = self.settings.ssh_key_path
        create = self.aws_command("ec2", "create-key-pair", "--key-name", name, "--query", "KeyMaterial",
                                  "--output", "text")
        return Line(FAIL, "key pair", f"KEY_NAME={name} does not exist in {self.region}: creates are refused",
                    f"`{create} > {path} && chmod 600 {path}`, or set KEY_NAME to a key pair of {self.region}")

    def private_key(self) -> Line:
        raw = self.settings.ssh_key_path
        path = Path(raw).expanduser()
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            return Line(WARN, "private key", f"SSH_KEY_PATH={raw} does not exist: creates work, but ssh cannot log in",
                        f"save the private key of {self.settings.key_name} there (AWS shows it only when the pair "
                        "is created), or set SSH_KEY_PATH to where it is")
        if not path.is_file():
            return Line(WARN, "private key", f"SSH_KEY_PATH={raw} is not a file", "set SSH_KEY_PATH to the .pem file")
        if mode & 0o077:
            return Line(WARN, "private key", f"{raw} has mode {mode:04o}: ssh refuses a key others can read",
                        f"`chmod 600 {raw}`")
        return Line(OK, "private key", f"{raw} (mode {mode:04o})")

    async def subnets(self) -> Line:
        try:
            doc = await self.aws.run("describe_default_subnets.sh")
        except ApiError as exc:
            return Line(FAIL, "default VPC", f"could not list the default subnets: {exc.detail}")
        subnets = doc.get("Subnets") or []
        if not subnets:
            return Line(FAIL, "default VPC", f"{self.region} has no default VPC subnet, and creates launch into one",
                        f"`{self.aws_command('ec2', 'create-default-vpc')}` (or, when the default VPC exists, "
                        f"`{self.aws_command('ec2', 'create-default-subnet', '--availability-zone', 'ZONE')}`)")
        vpcs = sorted({s.get("VpcId") for s in subnets if s.get("VpcId")})
        zones = sorted({s.get("AvailabilityZone") for s in subnets if s.get("AvailabilityZone")})
        return Line(OK, "default VPC", f"{', '.join(vpcs)}, {len(subnets)} default subnets ({', '.join(zones)})")

    async def catalog(self) -> list[Line]:
        try:
            found = await Catalog.fetch(self.aws, self.settings.free_tier_amis)
        except ApiError as exc:
            return [Line(FAIL, "instance types", f"could not read the free-tier catalogue: {exc.detail}"),
                    Line(SKIP, "AMI aliases", "need the catalogue")]
        allowed = self.settings.allowed_instance_types
        usable = [t for t in allowed if t in found.types]
        if not usable:
            types = Line(FAIL, "instance types", f"none of ALLOWED_INSTANCE_TYPES ({', '.join(allowed)}) is free-tier "
                                                 f"eligible in {self.region}",
                         f"set ALLOWED_INSTANCE_TYPES to some of: {', '.join(sorted(found.types)) or '(none here)'}")
        elif len(usable) < len(allowed):
            others = [t for t in allowed if t not in found.types]
            types = Line(WARN, "instance types", f"{', '.join(usable)} eligible; {', '.join(others)} not free-tier "
                                                 f"eligible in {self.region} (creates with them are refused)",
                         f"drop them from ALLOWED_INSTANCE_TYPES (eligible here: {', '.join(sorted(found.types))})")
        else:
            types = Line(OK, "instance types", f"{', '.join(usable)}: free-tier eligible in {self.region}")
        return [types, self.amis(found, {found.types[t] for t in usable})]

    def amis(self, found: Catalog, architectures: set[str]) -> Line:
        resolved = found.by_alias
        good = [f"{alias} ({', '.join(a for a in per_arch if (alias, a) in resolved)})" for alias, per_arch in
                ALIASES.items() if any((alias, a) in resolved for a in per_arch)]
        missing = [alias for alias, per_arch in ALIASES.items() if not any((alias, a) in resolved for a in per_arch)]
        own = [a for a in self.settings.free_tier_amis if a in found.amis]
        lost = [a for a in self.settings.free_tier_amis if a not in found.amis]
        usable = [a for a in found.amis.values() if a.architecture in architectures]
        if not usable:
            archs = ", ".join(sorted(architectures)) or "the allowed types"
            return Line(FAIL, "AMI aliases", f"no AMI resolves in {self.region} for {archs}",
                        f"set FREE_TIER_AMIS to an AMI id of {self.region} "
                        f"(`{self.aws_command('ec2', 'describe-images', '--owners', 'amazon')}`)")
        text = "resolve: " + "; ".join(good + [f"FREE_TIER_AMIS {a}" for a in own])
        if missing or lost:
            gaps = [f"{', '.join(missing)} not published in {self.region}"] if missing else []
            gaps += [f"FREE_TIER_AMIS {', '.join(lost)} not found"] if lost else []
            return Line(WARN, "AMI aliases", f"{text}; {'; '.join(gaps)} (creates with them are refused)",
                        "use one of the aliases that resolve, or an AMI id of the region in FREE_TIER_AMIS")
        return Line(OK, "AMI aliases", text)

    async def plan(self) -> Line:
        if self.sandbox:
            return Line(SKIP, "free plan", "the emulator has no freetier service (checked against AWS)")
        try:
            plan = parse_account_plan(await self.aws.run("get_account_plan_state.sh"))
        except ApiError as exc:
            fix = ("install a current AWS CLI v2 and set AWS_CLI to it" if exc.code == "aws_cli_outdated" else
                   "allow freetier:GetAccountPlanState to these credentials, or ignore: creates do not need it")
            return Line(WARN, "free plan", f"not available: {exc.detail}", fix)
        credits = ("" if plan["remaining_credits"] is None else
                   f", {plan['remaining_credits']:g} {plan['credits_unit'] or 'USD'} of credits left")
        expires = f", ends {plan['expires_at']}" if plan["expires_at"] else ""
        kind = {"FREE": "the account closes when credits or time run out",
                "PAID": "usage beyond the credits is billed"}.get(str(plan["plan_type"]), "")
        return Line(OK, "free plan", f"{plan['plan_type']} plan, {plan['status']}{credits}{expires}"
                                     + (f" ({kind})" if kind else ""))

    async def email(self) -> Line:
        """Whether the SMTP server takes our connection (and login); no mail is sent."""
        if not self.settings.smtp_host:
            return Line(SKIP, "email", "no SMTP_HOST: no mail notifications")
        try:
            said = await asyncio.to_thread(check_smtp, self.settings)
        except DeliveryError as exc:
            return Line(WARN, "email", f"{exc} (creates work; notifications by mail wait until it does)",
                        "check SMTP_HOST, SMTP_PORT, SMTP_STARTTLS, SMTP_USERNAME and SMTP_PASSWORD")
        return Line(OK, "email", f"{said}; mail goes to {', '.join(self.settings.notify_email_to)} (none sent now)")

    def urls(self) -> Line:
        urls = self.settings.notify_urls
        if not urls:
            return Line(SKIP, "notify URLs", "no NOTIFY_URLS")
        kinds = ", ".join(scheme_of(u.get_secret_value()) for u in urls)
        return Line(OK, "notify URLs", f"{len(urls)} valid ({kinds}); not contacted (that would send a message)")

    async def ssh_access(self) -> Line:
        """Which recorded instances' own groups do not admit this machine's current address (ssh_from)."""
        name = "SSH access"
        if not is_postgres_url(self.settings.database_url) and not self.settings.database_path.exists():
            return Line(SKIP, name, "no database yet: no instances")
        try:
            rows = await asyncio.to_thread(self._ssh_rows)
        except Exception as exc:  # noqa: BLE001 - an old or unreadable database: say so, check the rest
            return Line(SKIP, name, f"cannot read the instances ({exc.__class__.__name__})")
        if not rows:
            return Line(OK, name, "no running or stopped instance with a security group of its own")
        try:
            # In the sandbox without MY_IP_URL, my_ip is the address a request comes from: here, loopback.
            address = await MyIp(self.settings.my_ip_url, self.sandbox).get("127.0.0.1")
        except ApiError as exc:
            return Line(WARN, name, exc.detail, "set MY_IP_URL to a service that answers your public IPv4")
        shut = [f"{r['id']} ({r['ssh_from']})" for r in rows if not admits(r["ssh_from"], address)]
        if not shut:
            return Line(OK, name, f"all {len(rows)} instance(s) admit this machine ({address})")
        return Line(WARN, name, f"{len(shut)} of {len(rows)} instance(s) do not admit this machine ({address}): "
                                f"{', '.join(shut)}",
                    f"curl -X PUT {self.api_url}/instances/<id>/ssh-access -H 'Content-Type: application/json' "
                    "-d '{\"ssh_from\": \"my_ip\"}' (or send your CIDR)")

    def _ssh_rows(self) -> list:
        db = open_database(self.settings.database_url, self.settings.database_path)
        endpoint = self.settings.endpoint_key
        return [r for r in db.list_instances() if r["ssh_group"] and r["endpoint"] in (None, endpoint)]

    async def api(self) -> Line:
        url = f"{self.api_url}/health"

        def get() -> int:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=HEALTH_TIMEOUT_SECONDS) as resp:  # noqa: S310 - our own URL
                return resp.status

        try:
            status = await asyncio.to_thread(get)
        except Exception as exc:  # noqa: BLE001 - any failure means: not answering
            return Line(WARN, "API", f"nothing answers at {url} ({exc.__class__.__name__})",
                        "start it: `make run` (or `scripts/manage_server.sh start`)")
        return Line(OK if status == 200 else WARN, "API", f"{url} answers {status}")


def default_api_url() -> str:
    host = os.environ.get("HOST") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a bind-all address, not bound here
    return f"http://{host}:{os.environ.get('PORT') or '8000'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-url", default=default_api_url(), help="where the API answers (default: HOST, PORT)")
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # every problem is a line of the report
    try:
        Settings.checks = SETTINGS_CHECKS  # as the server checks them
        settings = Settings()
    except ValidationError as exc:
        print(Line(FAIL, "settings", describe_errors(exc), "fix the setting in the environment or .env").render())
        return 1
    lines = asyncio.run(Doctor(settings, args.api_url).run())
    for line in lines:
        print(line.render())
    failed = [line.name for line in lines if line.status == FAIL]
    print(f"=> a create would fail: fix {', '.join(failed)}" if failed else "=> a create would work")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
