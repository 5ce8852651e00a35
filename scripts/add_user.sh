#!/usr/bin/env bash
#
# Give a person their own API token: print a new token ONCE on stdout and add only its SHA-256 to
# the server's API_TOKENS_FILE (TOML; JSON when the file name ends in .json). The server re-reads the
# file when it changes: no restart.
#
#   scripts/add_user.sh alice                 (role user: sees and acts on her own instances)
#   scripts/add_user.sh root admin --file /srv/ec2cl/tokens.toml
#   TOKEN="$(scripts/add_user.sh bob)"        (only the token goes to stdout)
#
# Environment: API_TOKENS_FILE (the file unless --file is given; default ./data/tokens.toml),
# PYTHON (default: the repo's .venv/bin/python if present, else python3; 3.11 or newer).
# Exit codes: 0 added, 1 refused (name taken, file unusable), 2 usage.

set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/.." && pwd)"
readonly REPO_ROOT
readonly PROG="${0##*/}"
# shellcheck source=SCRIPTDIR/lib.sh
source "${SCRIPT_DIR}/lib.sh"
readonly DEFAULT_FILE="./data/tokens.toml"
readonly DEFAULT_ROLE="user"
readonly NAME_REGEX='^[a-z0-9._-]{1,64}$'
# The name API_TOKEN's holder goes by on the server (app/auth/tokens.py): never a file's.
readonly RESERVED_NAME="admin"

usage() {
  cat <<USAGE
Usage: ${PROG} NAME [ROLE] [--file FILE]

Make a new API token for NAME, print it once on stdout, and add NAME, the
token's SHA-256 (never the token) and ROLE to FILE. The server reads FILE as
API_TOKENS_FILE and picks the change up without a restart.

Arguments:
  NAME         1-64 of a-z 0-9 . _ - (not '${RESERVED_NAME}': API_TOKEN's name)
  ROLE         user (default: their own instances only) or admin (everything)

Options:
  --file FILE  the tokens file, .toml or .json (default: \$API_TOKENS_FILE,
               else ${DEFAULT_FILE}); created mode 0600 if missing
  -h, --help   show this help

A name already in FILE is refused: to give someone a new token, delete their
entry first (that also revokes the old token).
USAGE
}

#######################################
# Check FILE, refuse a taken NAME, append NAME's entry (atomically, under a
# lock) and print the new token on stdout.
# Arguments: FILE NAME ROLE
#######################################
add_entry() {
  "${PYTHON}" - "${REPO_ROOT}" "$@" <<'PY'
import fcntl
import hashlib
import json
import os
import secrets
import stat
import sys
import tempfile
from pathlib import Path

repo, file, name, role = sys.argv[1:5]
sys.path.insert(0, repo)
try:
    from app.auth.tokens import load_users  # the server's own reading of the file (standard library only)
except ImportError as exc:
    print(f"add_user.sh: cannot load {repo}/app/auth/tokens.py ({exc}); PYTHON must be 3.11 or newer",
          file=sys.stderr)
    sys.exit(1)


def refuse(message: str) -> None:
    print(f"add_user.sh: {message}", file=sys.stderr)
    sys.exit(1)


path = Path(os.path.realpath(file))  # a symlinked file is updated where it lives
directory = path.parent
directory.mkdir(mode=0o700, parents=True, exist_ok=True)
lock = os.open(directory, os.O_RDONLY)
fcntl.flock(lock, fcntl.LOCK_EX)  # two adds at once: each reads what the other wrote
text, mode = "", 0o600
if path.exists():
    try:
        users = load_users(path)
    except ValueError as exc:
        refuse(f"{exc}; nothing was added")
    if any(user.name == name for user in users):
        refuse(f"{name!r} is already in {path}; to give them a new token, delete their entry first "
               "(which revokes the old one)")
    text, mode = path.read_text(encoding="utf-8"), stat.S_IMODE(path.stat().st_mode)

token = secrets.token_urlsafe(32)
entry = {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest(), "role": role}
if path.suffix.lower() == ".json":
    doc = json.loads(text) if text.strip() else {}
    doc.setdefault("users", []).append(entry)
    new = json.dumps(doc, indent=2) + "\n"
else:
    if not text.strip():
        text = ("# API_TOKENS_FILE of ec2-creator-local: one [[users]] table per person (scripts/add_user.sh).\n"
                "# sha256 is the SHA-256 of the person's token; the token itself is never stored.\n")
    new = text + ("" if text.endswith("\n") else "\n") + "\n[[users]]\n" + "".join(
        f'{key} = "{value}"\n' for key, value in entry.items())

# Written beside the file, checked as the server will read it, then renamed over it: the server never
# sees half a file.
fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.stem}.", suffix=path.suffix)
try:
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(new)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(temporary, mode)
    if not any(user.name == name for user in load_users(Path(temporary))):
        refuse(f"{path} would not name {name!r} after the change; nothing was added")
    os.replace(temporary, path)
except BaseException:
    if os.path.exists(temporary):
        os.unlink(temporary)
    raise
print(token)
print(f"add_user.sh: added {name} ({role}) to {path}. The token above is shown this once; only its SHA-256 is "
      f"kept. {name} sends it as 'Authorization: Bearer <token>'.", file=sys.stderr)
PY
}

main() {
  local file="" name="" role=""
  local -a positional=()
  while (($# > 0)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --file)
        (($# >= 2)) || usage_error "option --file requires a value"
        file="$2"
        shift 2
        ;;
      --file=*)
        file="${1#--file=}"
        shift
        ;;
      -*)
        usage_error "unknown option: '$1'"
        ;;
      *)
        positional+=("$1")
        shift
        ;;
    esac
  done
  ((${#positional[@]} >= 1)) || usage_error "NAME is required"
  ((${#positional[@]} <= 2)) || usage_error "too many arguments: NAME [ROLE] only"
  name="${positional[0]}"
  role="${positional[1]:-${DEFAULT_ROLE}}"
  [[ "${name}" =~ ${NAME_REGEX} ]] || usage_error "NAME must be 1-64 of a-z 0-9 . _ -, got '${name}'"
  [[ "${name}" != "${RESERVED_NAME}" ]] \
    || usage_error "'${RESERVED_NAME}' is the name of API_TOKEN's holder on the server; choose another"
  [[ "${role}" == "user" || "${role}" == "admin" ]] || usage_error "ROLE must be user or admin, got '${role}'"
  file="${file:-${API_TOKENS_FILE:-${DEFAULT_FILE}}}"
  case "${file}" in
    *.toml | *.json) ;;
    *) usage_error "the tokens file must end with .toml or .json, got '${file}'" ;;
  esac
  if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then
      PYTHON="${REPO_ROOT}/.venv/bin/python"
    else
      PYTHON="python3"
    fi
  fi
  umask 077
  add_entry "${file}" "${name}" "${role}"
}

main "$@"
