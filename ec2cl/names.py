"""Instances named by name or id. A name resolves among the instances that are not terminated (the API's list
leaves terminated ones out): none is an unknown name (exit 1), two or more an ambiguous one (exit 2), unless
all but one of them are shutting down (`ec2cl rm web-1 --yes && ec2cl up web-1`: the new one is meant)."""

import difflib
import re
import shlex
from collections.abc import Sequence

from ec2cl.client import Api
from ec2cl.errors import REFUSED, USAGE, CliError

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


def is_id(ref: str) -> bool:
    return bool(INSTANCE_ID.fullmatch(ref))


def path(instance: dict, suffix: str = "") -> str:
    """`/instances/<id><suffix>`, for an id the API gave: anything but an instance id is refused, never sent."""
    if not is_id(str(instance.get("id"))):
        raise CliError(f"the API gave {instance.get('id')!r} as an instance id", REFUSED, "bad_response")
    return f"/instances/{instance['id']}{suffix}"


def label(instance: dict) -> str:
    """How messages name an instance: `web-1 (i-0abc...)`, or the id alone."""
    return f"{instance['name']} ({instance['id']})" if instance.get("name") else instance["id"]


LEAVING = ("shutting-down", "terminated")


def _pick(ref: str, candidates: list[dict], known: list[dict] | None = None) -> dict:
    staying = [i for i in candidates if i["state"] not in LEAVING]
    if len(candidates) > 1 and len(staying) == 1:
        return staying[0]
    if not candidates:
        near = difflib.get_close_matches(ref, sorted({i["name"] for i in known or [] if i.get("name")}), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise CliError(f"no instance is named {ref!r} (terminated ones do not count): `ec2cl ls` lists "
                       f"them{hint}", REFUSED, "instance_not_found")
    if len(candidates) > 1:
        listed = ", ".join(f"{i['id']} ({i['state']})" for i in candidates)
        raise CliError(f"{len(candidates)} instances are named {ref!r}: {listed}; name one by its id",
                       USAGE, "ambiguous_name")
    return candidates[0]


def resolve(api: Api, ref: str) -> dict:
    """The instance `ref` names (GET /instances/{id}, or the list filtered by name: no `aws` process)."""
    if is_id(ref):
        return api.get(f"/instances/{ref}")
    found = api.get("/instances", name=ref)["instances"]
    return _pick(ref, found, None if found else api.get("/instances")["instances"])


def resolve_many(api: Api, refs: Sequence[str]) -> list[dict]:
    """Each of `refs` (one list request for them all), repeats once. An id the list lacks (a terminated instance,
    someone else's) stays an id: the API answers for it."""
    live = api.get("/instances")["instances"]
    by_id = {i["id"]: i for i in live}
    found: dict[str, dict] = {}
    for ref in refs:
        instance = by_id.get(ref, {"id": ref, "name": None, "state": None}) if is_id(ref) else \
            _pick(ref, [i for i in live if i.get("name") == ref], live)
        found.setdefault(instance["id"], instance)
    return list(found.values())


def require_free(api: Api, name: str) -> None:
    """`ec2cl up` refuses a name a live instance has (exit 2): every later command resolves by name. One shutting
    down does not hold its name. Nor may a name look like an id (it would be read as one)."""
    if is_id(name):
        raise CliError(f"{name!r} looks like an instance id: every later command would read it as one; choose "
                       "another name", USAGE, "name_taken")
    taken = [i for i in api.get("/instances", name=name)["instances"] if i["state"] not in LEAVING]
    if taken:
        listed = ", ".join(f"{i['id']} ({i['state']})" for i in taken)
        raise CliError(f"the name {name!r} is taken by {listed}: choose another, or `ec2cl rm {shlex.quote(name)}` "
                       "first", USAGE, "name_taken")
