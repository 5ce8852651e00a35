"""Every shell block a user is told to paste, in README.md, docs/QUICK_START.md, docs/REFERENCE.md and
docs/EC2CL.md, runs as written against a sandbox (emulator) and API server this module starts: the docs cannot
drift from the code.

A block that cannot run here (it starts a server in the foreground, needs your AWS account, or is a
template to fill in) carries `<!-- not-run: why -->` on the line above it; any other block runs, with
`bash -euo pipefail`, from the repository root, the addresses 127.0.0.1:8000 (the API) and
127.0.0.1:5055 (the sandbox) pointed at this module's (and `ec2cl` at it: EC2CL_URL), fake credentials
only, and no region set (as on a machine with no ~/.aws/config).
"""

import re
import subprocess
import textwrap

import pytest

from tests.support.processes import ROOT, safe_env

DOCS = ("README.md", "docs/QUICK_START.md", "docs/REFERENCE.md", "docs/EC2CL.md")
BLOCK = re.compile(r"(?:<!--(?P<note>[^>]*)-->[ \t]*\n)?(?P<indent>[ \t]*)```bash\n(?P<body>.*?)```", re.S)


def blocks() -> list[tuple[str, str | None, str]]:
    """(where, note, body) of every bash block: `where` is file:line."""
    found = []
    for name in DOCS:
        text = (ROOT / name).read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("body"))
            note = (match.group("note") or "").strip() or None
            found.append((f"{name}:{line}", note, textwrap.dedent(match.group("body"))))
    return found


BLOCKS = blocks()
# The curl tour is run by tests/test_readme.py, which also checks what it prints.
RUN = [(where, body) for where, note, body in BLOCKS if not (note or "").startswith(("not-run:", "curl-tour:"))]


def test_the_docs_have_blocks_and_every_skipped_one_says_why():
    assert len(RUN) >= 7, RUN  # the retry-safe create, bulk actions, auto-stop, idle alarms, the scripts by hand...
    for where, note, _ in BLOCKS:
        if (note or "").startswith("not-run:"):
            assert len(note.split(":", 1)[1].strip()) >= 15, f"{where}: say why it is not run"


@pytest.mark.parametrize("where, body", RUN, ids=[where for where, _ in RUN])
def test_a_pasted_block_runs(where, body, api_server, fresh_emulator, tmp_path):
    script = body.replace("http://127.0.0.1:8000", api_server.url).replace("http://127.0.0.1:5055",
                                                                          fresh_emulator.url)
    # Fake credentials always (no test reaches AWS), but no region: a fresh machine has no ~/.aws/config.
    env = {k: v for k, v in safe_env().items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    # ec2cl (on PATH: the venv's bin) talks to this module's server, with a config directory of its own.
    env |= {"EC2CL_URL": api_server.url, "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=180, env=env)
    assert done.returncode == 0, f"{where} failed ({done.returncode}):\n{done.stderr[-3000:]}"
