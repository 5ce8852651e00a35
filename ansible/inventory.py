#!/usr/bin/env python3
"""Ansible dynamic inventory for EC2 Creator Local: asks the API's GET /inventory.

    ansible-inventory -i ansible/inventory.py --list
    ansible-playbook -i ansible/inventory.py ansible/site.yml

Environment:
    EC2_CREATOR_URL    the API; unset: http://HOST:PORT as `make run HOST=... PORT=...` takes them (exported),
                       by default http://127.0.0.1:8000
    EC2_CREATOR_TOKEN  its API_TOKEN, when the server has one (API_TOKEN is read too)

--list prints every group with `_meta.hostvars` (so Ansible runs this once); --host prints {}.
Standard library only: it runs with whatever python3 Ansible finds.
"""

from __future__ import annotations  # `str | None` on the python3 of older systems (3.7+)

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", "8000"
TIMEOUT_SECONDS = 30


def api_url(environ: Mapping[str, str]) -> str:
    """EC2_CREATOR_URL, else the address the server was started on: HOST and PORT, the variables `make run`
    and `make serve-sandbox` take (a wildcard HOST is reached as 127.0.0.1)."""
    if environ.get("EC2_CREATOR_URL"):
        return environ["EC2_CREATOR_URL"]
    host = environ.get("HOST") or DEFAULT_HOST
    if host in ("0.0.0.0", "::"):  # noqa: S104 - where to connect, not to bind
        host = DEFAULT_HOST
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{environ.get('PORT') or DEFAULT_PORT}"


def fetch_inventory(url: str, token: str | None) -> dict:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"EC2_CREATOR_URL must be an http:// or https:// URL, not {url!r}")
    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{url.rstrip('/')}/inventory", headers=headers)  # noqa: S310 - http(s) only
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:  # noqa: S310 - http(s) only
        return json.load(answer)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Ansible dynamic inventory from EC2 Creator Local's GET /inventory")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--list", action="store_true", help="every group, with _meta.hostvars")
    which.add_argument("--host", metavar="HOST", help="one host's variables (empty: --list carries them)")
    args = parser.parse_args(argv)
    if args.host is not None:
        print("{}")
        return 0
    url = api_url(os.environ)
    token = os.environ.get("EC2_CREATOR_TOKEN") or os.environ.get("API_TOKEN")
    try:
        inventory = fetch_inventory(url, token)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        hint = " (set EC2_CREATOR_TOKEN to the server's API_TOKEN)" if exc.code == 401 else ""
        print(f"inventory.py: {url}/inventory answered {exc.code}{hint}: {detail}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"inventory.py: cannot read {url}/inventory ({reason}); is the API running (make run)? "
              "Set EC2_CREATOR_URL (or PORT, as given to make run) if it is elsewhere.", file=sys.stderr)
        return 1
    json.dump(inventory, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
