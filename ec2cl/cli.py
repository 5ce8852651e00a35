"""The `ec2cl` commands (Typer). Each one: parse, one or a few API calls, a table or `-o json`, an exit code
(errors.py)."""

import functools
import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer

from ec2cl import __version__, config, names, ssh, waiting
from ec2cl.client import DEFAULT_MY_IP_URL, Api, my_address
from ec2cl.errors import REFUSED, UNREACHABLE, USAGE, CliError, clean
from ec2cl.output import Output, emit_json, emit_table, minutes, money, next_action, relative

HELP = ("Get a free-tier EC2 box up, ssh into it by name, take it down: the command-line client of EC2 Creator "
        "Local's REST API. Exit codes: 0 done, 1 the API refused, 2 usage (or an ambiguous or taken name), 3 the "
        "API is unreachable, 4 a wait timed out; `ec2cl ssh` then exits with ssh's own code.")
app = typer.Typer(name="ec2cl", help=HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]})
schedule_app = typer.Typer(help="Schedules: list, show, attach to an instance.",
                           no_args_is_help=True)
app.add_typer(schedule_app, name="schedule")

F = TypeVar("F", bound=Callable[..., Any])


def say(message: str) -> None:
    """Progress and notes: stderr, so stdout stays the command's output."""
    typer.echo(clean(f"ec2cl: {message}"), err=True)


@dataclass
class State:
    """What the global options chose; the API client is made on first use."""

    profile_name: str | None = None
    transport: httpx.BaseTransport | None = None  # tests: an API in process
    _profile: config.Profile | None = field(default=None, repr=False)
    _api: Api | None = field(default=None, repr=False)

    def profile(self) -> config.Profile:
        """The profile in force, read once."""
        if self._profile is None:
            self._profile = config.load(self.profile_name)
        return self._profile

    def api(self) -> Api:
        if self._api is None:
            for warning in self.profile().warnings:
                say(warning)
            self._api = Api(self.profile(), self.transport)
        return self._api


def command(typer_app: typer.Typer, name: str | None = None) -> Callable[[F], F]:
    """Register a command whose CliError becomes its one line on stderr and its exit code."""
    def register(function: F) -> F:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (KeyError, TypeError, AttributeError) as exc:  # an answer without the fields this version reads
                typer.echo(clean(f"ec2cl: bad_response: the API's answer lacks what ec2cl reads ({type(exc).__name__}: "
                                 f"{exc}): is it EC2 Creator Local's API, of a version this ec2cl knows?"), err=True)
                raise typer.Exit(REFUSED) from None
            except CliError as exc:
                typer.echo(exc.line(), err=True)
                raise typer.Exit(exc.exit_code) from None
            except typer.Abort:
                typer.echo("ec2cl: aborted: nothing was done", err=True)
                raise typer.Exit(REFUSED) from None
        typer_app.command(name)(run)
        return function
    return register


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ec2cl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(ctx: typer.Context,
                 profile: Annotated[str | None, typer.Option(
                     "--profile", "-p", metavar="NAME", show_default=False,
                     help="The profile of config.toml to use (else EC2CL_PROFILE, else default)")] = None,
                 version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                       help="Print ec2cl's version and exit")] = False) -> None:
    ctx.ensure_object(State).profile_name = profile


def complete_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of instance names (one list request, 2 s at most; nothing when the API cannot say)."""
    try:
        api = Api(config.load(ctx.find_root().params.get("profile")), _state(ctx).transport)
        api.http.timeout = httpx.Timeout(2.0)
        found = api.get("/instances")["instances"]
    except (CliError, httpx.HTTPError, ValueError, KeyError, TypeError):
        return []
    return sorted({i["name"] for i in found if i.get("name") and i["name"].startswith(incomplete)})


SNOOZE_MINUTES = (15, 720)  # the API's bounds of POST /instances/{id}/snooze
InstanceArg = Annotated[str, typer.Argument(metavar="NAME", help="The instance: its name or id",
                                            autocompletion=complete_names)]
OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table for people, json for scripts (the "
                                                                     "API's own objects)")]


def _state(ctx: typer.Context) -> State:
    return ctx.ensure_object(State)


# -- profiles -------------------------------------------------------------------------------------------------------
@command(app)
def login(ctx: typer.Context,
          url: Annotated[str | None, typer.Option(metavar="URL", help="The API's URL (else EC2CL_URL, the profile's, "
                                                       "http://127.0.0.1:8000)", show_default=False)] = None,
          token_stdin: Annotated[bool, typer.Option("--token-stdin", help="Read the token from stdin (a script's "
                                                                          "way) rather than asking")] = False) -> None:
    """Log in: check a token, keep it in the profile.

    The profile is in config.toml (mode 0600); a server that asks for no token needs no login."""
    state = _state(ctx)
    current = config.load(state.profile_name, new=True)  # login may add the profile
    target = (url or current.url).rstrip("/")
    config.check_url(target)
    try:
        Api(config.Profile(current.name, target, None, current.path), state.transport).get("/instances",
                                                                                          state="running")
    except CliError as exc:
        if exc.code != "unauthorized":
            raise
    else:
        raise CliError(f"{target} asks for no token (its API_TOKEN and API_TOKENS_FILE are unset): there is "
                       "nothing to log in to", USAGE, "no_token_needed")
    if not token_stdin and not sys.stdin.isatty():
        raise CliError("no terminal to ask for the token on: pipe it to `ec2cl login --token-stdin`", USAGE,
                       "no_token")
    token = sys.stdin.readline().strip() if token_stdin else typer.prompt("Token", hide_input=True).strip()
    if not token:
        raise CliError("no token given", USAGE, "no_token")
    api = Api(config.Profile(current.name, target, token, current.path), state.transport)
    api.get("/instances", state="running")  # 401 when the token is wrong: nothing is written
    path = config.save(current.name, target, token)
    say(f"the token works; profile {current.name!r} ({target}) saved in {path} (mode 0600)")


# -- listing --------------------------------------------------------------------------------------------------------
def _instance_rows(instances: list[dict]) -> list[list[Any]]:
    return [[i.get("name"), i["id"], i["state"], i.get("instance_type"), i.get("public_ip"), next_action(i)]
            for i in sorted(instances, key=lambda i: (i.get("name") or "", i["id"]))]


INSTANCE_HEADERS = ("NAME", "ID", "STATE", "TYPE", "PUBLIC IP", "NEXT")


class State_(StrEnum):
    pending = "pending"
    running = "running"
    stopping = "stopping"
    stopped = "stopped"
    shutting_down = "shutting-down"
    terminated = "terminated"


@command(app, "ls")
def list_instances(ctx: typer.Context,
                   state: Annotated[list[State_] | None, typer.Option(
                       "--state", metavar="STATE", help="Only this state (repeatable: any of them)",
                       show_default=False)] = None,
                   tag: Annotated[list[str] | None, typer.Option(
                       "--tag", metavar="K=V", help="K=V, or K for any value (repeatable: all must match)",
                       show_default=False)] = None,
                   output: OutputOption = Output.table,
                   quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Ids only, one a line")] = False) -> None:
    """List instances.

    Terminated ones only with --state terminated."""
    found = _state(ctx).api().get("/instances", state=[str(s) for s in state or []] or None, tag=tag or None)
    if not found["instances"] and output == Output.table:
        say("no instances" + (" match" if state or tag else " yet: `ec2cl up NAME` launches one"))
    if quiet:
        for instance in found["instances"]:
            typer.echo(instance["id"])
    elif output == Output.json:
        emit_json(found)
    else:
        emit_table(INSTANCE_HEADERS, _instance_rows(found["instances"]))


# -- up ---------------------------------------------------------------------------------------------------------------
def _ssh_from(given: str | None) -> str:
    """--ssh-from, else this machine's public address (a /32) as MY_IP_URL tells it, else "my_ip" (the server's
    view of it)."""
    if given:
        return given
    url = os.environ.get("MY_IP_URL") or DEFAULT_MY_IP_URL
    address = my_address(url)
    if address is None:
        say(f"could not learn this machine's public address from {url}: asking for ssh_from my_ip (the address "
            "the server sees)")
        return "my_ip"
    return f"{address}/32"


_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
SSH_FROM = re.compile(rf"my_ip|none|{_OCTET}(\.{_OCTET}){{3}}(/(3[0-2]|[12]?[0-9]))?")  # the API's ssh_from
SANDBOX_NOTE = ("this server runs against the local EC2 sandbox: its boxes' addresses are made up, so ssh cannot "
                "reach them (on your AWS account, EC2_TARGET=aws make run, it does)")


def _describe(instance: dict) -> str:
    parts = [instance["state"], instance.get("instance_type"), instance.get("ami")]
    if instance.get("public_ip"):
        parts.append(f"at {instance['public_ip']}")
    if instance.get("next_action"):
        parts.append(next_action(instance))
    return f"{names.label(instance)}: " + ", ".join(str(p) for p in parts if p)


@command(app)
def up(ctx: typer.Context,
       name: Annotated[str, typer.Argument(metavar="NAME", help="Its name (unique among live instances)")],
       ami: Annotated[str, typer.Option(metavar="ALIAS",
                                        help="An AMI alias or a free-tier AMI id")] = "amazon-linux-2023",
       instance_type: Annotated[str, typer.Option("--type", metavar="TYPE",
                                                  help="A free-tier instance type")] = "t3.micro",
       disk: Annotated[int | None, typer.Option(metavar="GB", help="Root volume in GB (8-30; else the server's 8)",
                                                show_default=False)] = None,
       auto_stop: Annotated[str | None, typer.Option(
           metavar="DURATION", help="Stop it this long after each start: 8h, 90m, 1h30m, or off (else the server's "
                                    "default)", show_default=False)] = None,
       schedule: Annotated[str | None, typer.Option(metavar="NAME", help="A schedule that starts and stops it",
                                                    show_default=False)] = None,
       no_public_ip: Annotated[bool, typer.Option("--no-public-ip", help="No public IPv4 (billed hourly); "
                                                                         "reachable only inside its VPC")] = False,
       ssh_from: Annotated[str | None, typer.Option(
           metavar="CIDR", help="Who may reach port 22: a CIDR, my_ip or none (else this machine's public address)",
           show_default=False)] = None,
       wait: Annotated[bool, typer.Option("--wait", help="Show progress until it runs")] = False,
       timeout: Annotated[float, typer.Option(metavar="SECONDS", help="With --wait: seconds to wait at most",
                                              min=1)] = 300,
       output: OutputOption = Output.table) -> None:
    """Launch a box (--wait: until it runs).

    One retry-safe create: the same Idempotency-Key is sent again if the connection drops. Durations are like
    8h, 90m, 1h30m or 2d."""
    if not name.strip():
        raise CliError("NAME: give the box a name", USAGE, "bad_name")
    if ssh_from is not None and not SSH_FROM.fullmatch(ssh_from):
        raise CliError(f"--ssh-from: {ssh_from!r} is not my_ip, none, an IPv4 address or an IPv4 CIDR such as "
                       "203.0.113.0/24", USAGE, "bad_ssh_from")
    body: dict[str, Any] = {"name": name, "ami": ami, "instance_type": instance_type}
    if disk is not None:
        body["storage_gb"] = disk
    if auto_stop is not None:
        body["auto_stop_minutes"] = None if auto_stop.strip().lower() == "off" else minutes(auto_stop, "--auto-stop")
        if body["auto_stop_minutes"] is not None and not 1 <= body["auto_stop_minutes"] <= 10080:
            raise CliError(f"--auto-stop: {auto_stop} is not between 1m and 7d", USAGE, "bad_duration")
    if schedule is not None:
        body["schedule"] = schedule
    if no_public_ip:
        body["associate_public_ip"] = False
    api = _state(ctx).api()
    names.require_free(api, name)
    body["ssh_from"] = _ssh_from(ssh_from)
    instance, replayed = api.create(body, on_resend=say)
    if replayed:
        say("the server had already launched it (the first request got through): the same instance")
    if wait:
        instance = waiting.until_state(api, instance, "running", waiting.Deadline(timeout), say)
    if output == Output.json:
        emit_json(instance)
        return
    typer.echo(clean(_describe(instance)))
    if instance["state"] in ("pending", "running"):
        say(SANDBOX_NOTE if api.sandbox else f"next: ec2cl ssh {shlex.quote(name)}")


# -- ssh --------------------------------------------------------------------------------------------------------------
@command(app, "ssh")
def ssh_into(ctx: typer.Context,
             name: InstanceArg,
             command_: Annotated[list[str] | None, typer.Argument(
                 metavar="[-- COMMAND...]", help="A command to run there (after --) instead of a shell",
                 show_default=False)] = None,
             start: Annotated[bool, typer.Option("--start", help="Start it first if it is stopped")] = False,
             timeout: Annotated[float, typer.Option(
                 metavar="SECONDS", help="Seconds to wait at most until it runs and ssh answers", min=1)] = 180,
             identity: Annotated[str | None, typer.Option(
                 "--identity", "-i", metavar="KEY", show_default=False,
                 help="The private key (else the server's SSH_KEY_PATH when it is on this machine, else "
                      "~/.ssh/my_ec2_keypair.pem)")] = None,
             ) -> None:
    """ssh into an instance by name.

    Waits until it runs and sshd answers (--timeout), then runs the system ssh as its login user, with its key;
    ec2cl then exits with ssh's code."""
    api = _state(ctx).api()
    instance = names.resolve(api, name)
    if api.sandbox:
        say(SANDBOX_NOTE)
    deadline = waiting.Deadline(timeout)
    if instance["state"] in ("stopped", "stopping"):
        if not start:
            raise CliError(f"{names.label(instance)} is {instance['state']}: `ec2cl ssh --start "
                           f"{shlex.quote(name)}` starts it first", REFUSED, "wrong_state")
        instance = waiting.until_state(api, instance, "stopped", deadline, say)
        say(f"starting {names.label(instance)}")
        instance = api.post(names.path(instance, "/start"))
    instance = waiting.until_state(api, instance, "running", deadline, say)
    if not instance.get("public_ip") or not instance.get("ssh_string"):
        why = instance.get("ssh_unavailable") or "it has no public address"
        raise CliError(f"cannot ssh into {names.label(instance)}: {why}", REFUSED, "ssh_unavailable")
    ssh.destination(instance)  # an address or login user ssh must not be handed: refused here
    key = ssh.pick_key(identity, instance)
    if not identity and key == ssh.server_key(instance):
        say(f"using the server's SSH_KEY_PATH, {key} (--identity names another)")
    if not key.is_file():
        say(f"no key file at {key}: ssh will try your agent's keys (--identity names the key pair's .pem)")
    waiting.until_ssh(instance, key, deadline, say)
    sys.stdout.flush()
    sys.stderr.flush()
    ssh.exec_ssh(ssh.session_argv(instance, key, command_ or ()))


# -- start, stop, rm ------------------------------------------------------------------------------------------------
def _bulk(ctx: typer.Context, action: str, refs: list[str], output: Output, confirm: bool = False) -> None:
    api = _state(ctx).api()
    try:
        targets = names.resolve_many(api, refs)
    except CliError as exc:
        if len(refs) > 1:
            exc.message += "; nothing was done"
        raise
    if confirm:
        listed = ", ".join(names.label(i) for i in targets)
        try:
            typer.confirm(f"Terminate {listed}? Its disk goes with it", default=False, abort=True, err=True)
        except typer.Abort:
            raise CliError("not confirmed: nothing was done (--yes skips the question)", REFUSED,
                           "not_confirmed") from None
    result = api.post("/instances/actions", {"action": action, "ids": [i["id"] for i in targets]})
    by_id = {i["id"]: i for i in targets}
    failed = [r for r in result["results"] if r["status"] >= 400]
    if output == Output.json:
        emit_json(result)
    else:
        rows = []
        for line in result["results"]:
            if line.get("error"):
                outcome = f"refused: {line['error']['code']}: {line['error']['detail']}"
            else:
                outcome = "sent" if line["status"] == 202 else "nothing to do"
            rows.append([by_id.get(line["id"], {}).get("name"), line["id"], line.get("state"), outcome])
        emit_table(("NAME", "ID", "STATE", "RESULT"), rows)
    if failed:
        raise typer.Exit(REFUSED)


Names = Annotated[list[str], typer.Argument(metavar="NAME...", help="Instances: names or ids", show_default=False,
                                            autocompletion=complete_names)]


@command(app)
def stop(ctx: typer.Context, name: Names, output: OutputOption = Output.table) -> None:
    """Stop instances (one request for them all)."""
    _bulk(ctx, "stop", name, output)


@command(app)
def start(ctx: typer.Context, name: Names, output: OutputOption = Output.table) -> None:
    """Start instances (one request for them all)."""
    _bulk(ctx, "start", name, output)


@command(app)
def rm(ctx: typer.Context, name: Names,
       yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask")] = False,
       output: OutputOption = Output.table) -> None:
    """Terminate instances and their disks.

    One request for them all; asks first unless --yes."""
    _bulk(ctx, "delete", name, output, confirm=not yes)


# -- snooze, events, budget -----------------------------------------------------------------------------------------
@command(app)
def snooze(ctx: typer.Context, name: InstanceArg,
           duration: Annotated[str, typer.Argument(metavar="DURATION",
                                                   help="How much later it stops: 2h, 90m (15m-12h)")],
           output: OutputOption = Output.table) -> None:
    """Push an instance's next stop later.

    Its auto-stop's or its schedule's: by 15m to 12h, within the budget."""
    api = _state(ctx).api()
    pushed = minutes(duration, "DURATION")
    if not SNOOZE_MINUTES[0] <= pushed <= SNOOZE_MINUTES[1]:
        raise CliError(f"DURATION: a snooze is 15m to 12h, not {duration}", USAGE, "bad_duration")
    instance = names.resolve(api, name)
    instance = api.post(names.path(instance, "/snooze"), {"minutes": pushed})
    if output == Output.json:
        emit_json(instance)
    else:
        typer.echo(clean(_describe(instance)))


@command(app)
def events(ctx: typer.Context, name: InstanceArg,
           output: OutputOption = Output.table) -> None:
    """An instance's history of state changes.

    Each change, when, and who or what did it."""
    api = _state(ctx).api()
    instance = names.resolve(api, name)
    found = api.get(names.path(instance, "/events"))
    if output == Output.json:
        emit_json(found)
        return
    emit_table(("AT (UTC)", "ACTION", "FROM", "TO", "BY", "DETAIL"),
               [[e["at"], e["action"], e.get("from_state"), e.get("to_state"),
                 e.get("actor") or e.get("source"), e.get("detail") or e.get("aws_error")] for e in found["events"]])


@command(app)
def budget(ctx: typer.Context, output: OutputOption = Output.table) -> None:
    """This budget period's spend.

    Spent, committed (spent, and what each box costs until it stops) and what remains."""
    found = _state(ctx).api().get("/budget")
    if output == Output.json:
        emit_json(found)
        return
    typer.echo(f"budget {money(found['budget_usd'])} USD, {found['period_start'][:10]} to {found['period_end'][:10]} "
               "(UTC)")
    typer.echo(f"  spent      {money(found['spent_usd'])}\n  committed  {money(found['committed_usd'])} (spent, "
               f"and what each box costs until it stops)\n  remaining  {money(found['remaining_usd'])}")
    if found["instances"]:
        typer.echo("")
        emit_table(("NAME", "ID", "STATE", "SPENT", "UNTIL STOP", "STOPS"),
                   [[i.get("name"), i["id"], i["state"], money(i["spent_usd"]), money(i["projected_usd"]),
                     relative(i.get("stop_at"))] for i in found["instances"]])


# -- schedules ------------------------------------------------------------------------------------------------------
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # the API's (also the EC2 tag Schedule's value)


def _periods(schedule: dict) -> str:
    return "; ".join(f"{p['days']} {p.get('start') or '..'}-{p.get('stop') or '..'}" for p in schedule["periods"])


@command(schedule_app, "ls")
def schedule_list(ctx: typer.Context, output: OutputOption = Output.table) -> None:
    """The schedules (definitions)."""
    found = _state(ctx).api().get("/schedules")
    if not found["schedules"] and output == Output.table:
        say("no schedules yet: an admin makes them through the API (POST /schedules; docs/REFERENCE.md#schedules)")
    if output == Output.json:
        emit_json(found)
    else:
        emit_table(("NAME", "TIME ZONE", "PERIODS"),
                   [[s["name"], s["timezone"], _periods(s)] for s in found["schedules"]])


@command(schedule_app, "show")
def schedule_show(ctx: typer.Context,
                  name: Annotated[str, typer.Argument(metavar="SCHEDULE", help="The schedule's name")],
                  output: OutputOption = Output.table) -> None:
    """One schedule: its periods, holidays and settings."""
    if not SCHEDULE_NAME.fullmatch(name):
        raise CliError(f"SCHEDULE: {name!r} is not a schedule name (1-64 of letters, digits, _ . and -)", USAGE,
                       "bad_schedule_name")
    found = _state(ctx).api().get(f"/schedules/{name}")
    if output == Output.json:
        emit_json(found)
        return
    emit_table(("FIELD", "VALUE"), [["name", found["name"]], ["timezone", found["timezone"]],
                                    ["periods", _periods(found)], ["holidays", ", ".join(found.get("holidays", []))],
                                    ["respect_manual_stop", str(found.get("respect_manual_stop")).lower()]])


@command(schedule_app, "set")
def schedule_set(ctx: typer.Context, name: InstanceArg,
                 schedule: Annotated[str, typer.Argument(metavar="SCHEDULE",
                                                         help="A schedule's name, or none to detach it")],
                 output: OutputOption = Output.table) -> None:
    """Attach a schedule to an instance, or none.

    It is the EC2 tag Schedule; `none` detaches it."""
    api = _state(ctx).api()
    instance = names.resolve(api, name)
    instance = api.patch(names.path(instance), {"schedule": None if schedule == "none" else schedule})
    if output == Output.json:
        emit_json(instance)
    else:
        typer.echo(clean(f"{names.label(instance)}: schedule {instance.get('schedule') or 'none'}"
                   + (f" ({instance['schedule_error']})" if instance.get("schedule_error") else "")))


# -- ssh-config -----------------------------------------------------------------------------------------------------
SSH_CONFIG = Path("~/.ssh/config.d/ec2cl")
INCLUDE = "Include ~/.ssh/config.d/ec2cl"


def _host_alias(name: str | None) -> bool:
    return bool(name) and not any(c.isspace() or c in "*?!,#\"'\\" for c in name or "")


def ssh_config_text(instances: list[dict], identity: str | None) -> str:
    """A Host block per running instance with an ssh command: its id, and its name when that is one word no other
    of them has."""
    usable = [i for i in instances if i["state"] == "running" and i.get("public_ip") and i.get("ssh_string")
              and ssh.unusable(i) is None]
    counts: dict[str, int] = {}
    for i in usable:
        counts[i.get("name") or ""] = counts.get(i.get("name") or "", 0) + 1
    blocks = ["# Written by `ec2cl ssh-config` (rewritten each time: edits are lost). Running instances only."]
    for i in sorted(usable, key=lambda i: (i.get("name") or "", i["id"])):
        aliases = [i["name"]] if _host_alias(i.get("name")) and counts[i["name"]] == 1 else []
        key = ssh.pick_key(identity, i)
        if any(c in str(key) for c in '"\n\r'):
            continue  # a path ssh_config cannot quote
        blocks.append("\n".join([
            f"\nHost {' '.join([*aliases, i['id']])}", f"    HostName {i['public_ip']}",
            f"    User {i.get('login_user') or 'ec2-user'}", f'    IdentityFile "{key}"',
            *(["    IdentitiesOnly yes"] if key.is_file() else []),
            f"    HostKeyAlias {i['id']}", "    StrictHostKeyChecking accept-new"]))
    return "\n".join(blocks) + "\n"


@command(app, "ssh-config")
def ssh_config(ctx: typer.Context,
               identity: Annotated[str | None, typer.Option(
                   "--identity", "-i", metavar="KEY", show_default=False,
                   help="The private key for every entry (else as ec2cl ssh picks it)")] = None) -> None:
    """Write ~/.ssh/config entries for running boxes.

    A Host entry per running instance in ~/.ssh/config.d/ec2cl: then `ssh NAME`, scp, rsync and editors'
    remote modes work."""
    api = _state(ctx).api()
    found = api.get("/instances", state="running")
    path = SSH_CONFIG.expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = ssh_config_text(found["instances"], identity)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(text)
    hosts = text.count("\nHost ")
    say(f"wrote {hosts} host{'s' * (hosts != 1)} to {path}")
    if api.sandbox and hosts:
        say(SANDBOX_NOTE)
    main_config = Path("~/.ssh/config").expanduser()
    included = main_config.is_file() and any(line.strip() == INCLUDE for line in main_config.read_text().splitlines())
    if included:
        say(f"{main_config} includes it already")
    else:
        say(f"add this line at the top of {main_config} (before any Host):")
        typer.echo(INCLUDE)


# -- doctor ---------------------------------------------------------------------------------------------------------
@command(app)
def doctor(ctx: typer.Context,
           name: Annotated[str | None, typer.Argument(metavar="[NAME]", show_default=False,
                                                      help="Check this instance (else every running one)")] = None,
           identity: Annotated[str | None, typer.Option(
               "--identity", "-i", metavar="KEY", show_default=False,
               help="The private key ec2cl ssh would use")] = None) -> None:
    """Check that ec2cl can get you in.

    The API answers, the token works, the key file is there at 0600, and each running instance's SSH rule lets
    this machine in on port 22."""
    lines: list[tuple[str, str, str]] = []
    state = _state(ctx)
    api = state.api()
    try:
        health = api.get("/health")
    except CliError as exc:
        lines.append(("FAIL", "API", f"{api.url}: {exc.message}"))
        _report(lines)
        raise typer.Exit(UNREACHABLE if exc.exit_code == UNREACHABLE else REFUSED) from None
    lines.append(("ok", "API", f"{api.url} answers ({health.get('status', 'ok')})"))
    if api.sandbox:
        lines.append(("WARN", "sandbox", "the server runs against the local EC2 sandbox: its addresses are made up, "
                                         "so ssh cannot reach them"))
    try:
        running = api.get("/instances", state="running")["instances"]
    except CliError as exc:
        lines.append(("FAIL", "token", f"{exc.code}: {exc.message}"))
        _report(lines)
        raise typer.Exit(REFUSED) from None
    profile = state.profile()
    lines.append(("ok", "token", f"accepted (profile {profile.name})" if profile.token else
                  "none sent, and the API asks for none"))
    targets = [names.resolve(api, name)] if name else running
    keys = {ssh.pick_key(identity, i) for i in targets} or {ssh.pick_key(identity, {})}
    for key in sorted(keys):
        if not key.is_file():
            lines.append(("FAIL", "key", f"{key} does not exist (the key pair's .pem: --identity names it)"))
        elif key.stat().st_mode & 0o077:
            lines.append(("FAIL", "key", f"{key} is mode {key.stat().st_mode & 0o777:o}: ssh refuses a key others "
                                         f"can read: chmod 600 {key}"))
        else:
            lines.append(("ok", "key", f"{key} (mode {key.stat().st_mode & 0o777:o})"))
    url = os.environ.get("MY_IP_URL") or DEFAULT_MY_IP_URL
    address = my_address(url)
    if address is None:
        lines.append(("WARN", "address", f"this machine's public address is unknown ({url} did not say within 3 s)"))
    else:
        lines.append(("ok", "address", f"this machine is {address} (as {url} sees it)"))
    if not targets:
        lines.append(("ok", "instances", "none running: nothing more to check"))
    for instance in targets:
        lines.append(_ssh_rule_line(instance, address))
    _report(lines)
    if any(level == "FAIL" for level, _, _ in lines):
        raise typer.Exit(REFUSED)


def _ssh_rule_line(instance: dict, address: str | None) -> tuple[str, str, str]:
    who = names.label(instance)
    rule = instance.get("ssh_from")
    fix = f"PUT /instances/{instance['id']}/ssh-access {{\"ssh_from\": \"my_ip\"}}"
    if instance["state"] != "running":
        return ("WARN", who, f"it is {instance['state']}: `ec2cl ssh --start` starts it")
    if not instance.get("public_ip"):
        return ("FAIL", who, "no public address: ssh cannot reach it from outside its VPC")
    if rule is None:
        return ("WARN", who, "its SSH rule is not managed here (adopted, or older than ssh_from): not checked")
    if rule == "none":
        return ("FAIL", who, f"no SSH rule (ssh_from none): {fix}")
    if address is None:
        return ("WARN", who, f"port 22 is open to {rule}; this machine's address is unknown")
    try:
        network = ipaddress.IPv4Network(rule, strict=False)
    except ValueError:
        return ("WARN", who, f"its SSH rule {rule!r} is not an IPv4 CIDR: not checked")
    if ipaddress.IPv4Address(address) in network:
        return ("ok", who, f"port 22 is open to {rule}, which holds {address}")
    return ("FAIL", who, f"port 22 is open to {rule} only, not to {address}: {fix}")


def _report(lines: list[tuple[str, str, str]]) -> None:
    width = max(len(what) for _, what, _ in lines)
    for level, what, text in lines:
        typer.echo(clean(f"{level:<4}  {what:<{width}}  {text}"))


def main() -> None:
    """The `ec2cl` command."""
    app(prog_name="ec2cl")

