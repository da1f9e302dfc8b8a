#!/usr/bin/env bash
# Makes the virtual environment for a role and installs only what that role runs, pinned by constraints.txt.
# A no-op when the environment already holds the role at the current pins.
# Usage: scripts/python-env.sh deploy|run|dev
#   deploy: the auto-start proxy and the deploy scripts (`make up`, `make backup`, `make restore`): extra autostart
#   run:    `make run`: both services, the proxy and the openai client its example uses: extra run
#   dev:    `make install`, `make test`: the three components and the development tools: extras all,dev
# The interpreter: the environment's own when it exists, else PYTHON, else the first of python3, python3.13,
# python3.12, python3.11 that is 3.11-3.13; on Debian/Ubuntu without one, Debian's python3 is installed when it is
# such a version (scripts/install-system-deps.sh python), else one line says what to install. The venv module, and
# for the services the compiler and Python's headers (webrtcvad is published as source only), are installed the same
# way when missing. The package index must answer before anything is made. On any failure an environment this run
# created is removed again: nothing is left half-installed.
# Environment: PYTHON (the interpreter), VENV (.venv), WHO (the name messages start with, e.g. "make run"),
# PIP_INDEX_URL / PIP_CERT (pip's own: a mirror, the CA bundle pip trusts; pip's config files are read as well).
set -euo pipefail
cd "$(dirname "$0")/.."
role="${1:-}"
venv="${VENV:-.venv}"
who="${WHO:-make}"
pip_version=24.3.1
die() { echo "$who: $*" >&2; exit 1; }

case "$role" in
  deploy) extras=autostart; covers=(deploy); compiles=0 ;;
  run) extras=run; covers=(run deploy); compiles=1 ;;
  dev) extras=all,dev; covers=(dev run deploy); compiles=1 ;;
  *) die "scripts/python-env.sh: unknown role '$role' (deploy, run or dev)" ;;
esac
stamp() { [ "$1" = dev ] && echo "$venv/.installed" || echo "$venv/.installed-$1"; }
record="$venv/.python-env"
pins="$(cat pyproject.toml constraints.txt scripts/python-env.sh | sha256sum | cut -c1-16)"

# --- already there? ------------------------------------------------------------------------------------------------
recorded_pins="" recorded_roles=""
if [ -f "$record" ] && [ -x "$venv/bin/python" ]; then
  recorded_pins="$(sed -n 's/^pins=//p' "$record")"
  recorded_roles="$(sed -n 's/^roles=//p' "$record")"
fi
if [ "$recorded_pins" = "$pins" ] && [[ " $recorded_roles " == *" $role "* ]]; then
  for r in "${covers[@]}"; do touch "$(stamp "$r")"; done
  exit 0
fi
# New pins: what the environment held is brought up to them too (a `make test` venv stays one after an upgrade).
for r in $recorded_roles; do
  case "$r" in
    dev) extras=all,dev; covers=(dev run deploy); compiles=1 ;;
    run) [ "$role" = deploy ] && { extras=run; covers=(run deploy); compiles=1; } ;;
  esac
done

# --- the interpreter ---------------------------------------------------------------------------------------------
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
supported() { case "$1" in 3.11|3.12|3.13) return 0 ;; *) return 1 ;; esac; }
apt_install() { WHO="$who" scripts/install-system-deps.sh "$@"; }

python=""
if [ -x "$venv/bin/python" ]; then
  v="$(version_of "$venv/bin/python" || true)"
  supported "$v" || die "$venv was made with Python ${v:-of an unknown version}, which the platform does not run: remove it (make clean) and run again"
  python="$venv/bin/python"
elif [ -n "${PYTHON:-}" ]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON is not an interpreter on this machine: install Python 3.11, 3.12 or 3.13, or unset PYTHON"
  v="$(version_of "$PYTHON" || true)"
  supported "$v" || die "PYTHON=$PYTHON is Python ${v:-of an unknown version} and the platform runs on 3.11, 3.12 or 3.13: install one of them (Debian 12: python3.11, Debian 13: python3.13, Ubuntu 24.04: python3.12, each with its -venv package) and set PYTHON to it"
  python="$PYTHON"
else
  find_python() {
    local candidate found=""
    for candidate in python3 python3.13 python3.12 python3.11; do
      command -v "$candidate" >/dev/null 2>&1 || continue
      supported "$(version_of "$candidate" || true)" && { found="$(command -v "$candidate")"; break; }
    done
    echo "$found"
  }
  python="$(find_python)"
  if [ -z "$python" ]; then
    if command -v apt-get >/dev/null 2>&1; then
      apt_install python
      python="$(find_python)"
    fi
    if [ -z "$python" ]; then
      seen=""
      if command -v python3 >/dev/null 2>&1; then seen=" (python3 here is $(version_of python3 || echo unknown))"; fi
      die "no Python 3.11, 3.12 or 3.13 found$seen: install one with its venv module (Debian 12: python3.11-venv, Debian 13: python3.13-venv, Ubuntu 24.04: python3.12-venv) and run again, or set PYTHON=<path>"
    fi
  fi
fi
v="$(version_of "$python")"

# Debian splits venv's pip bootstrap (ensurepip) into python3.X-venv, and the headers into python3.X-dev.
debian_python() { [[ "$(readlink -f "$python")" == /usr/bin/* ]] && command -v apt-get >/dev/null 2>&1; }
if [ ! -x "$venv/bin/python" ] && ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  debian_python || die "$python has no venv module (ensurepip): install it (Debian/Ubuntu: python$v-venv) and run again"
  apt_install packages "python$v-venv"
fi
if [ $compiles = 1 ]; then
  headers="$("$python" -c 'import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))')"
  need=()
  command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  [ "$headers" = True ] || need+=("python$v-dev")
  if [ ${#need[@]} -gt 0 ]; then
    debian_python || [ "$headers" = True ] \
      || die "webrtcvad (for whisperx) is built from source: install a C compiler and the headers of $python (Python.h), then run again"
    apt_install packages "${need[@]}"
  fi
fi

# --- the environment -----------------------------------------------------------------------------------------------
created=0
finish() {
  status=$?
  if [ $status -ne 0 ] && [ $created = 1 ]; then
    rm -rf "$venv"
    echo "$who: removed the half-made $venv" >&2
  fi
  exit $status
}
trap finish EXIT
if [ ! -x "$venv/bin/python" ]; then
  echo "$who: making $venv with $python (Python $v)"
  created=1
  "$python" -m venv "$venv" >/dev/null || die "$python -m venv $venv failed (above)"
fi

# The index answers, or nothing is installed: one line instead of minutes of pip's retries.
"$venv/bin/python" - "$who" <<'EOF' || exit 1
import os, ssl, subprocess, sys, urllib.request

config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
settings = {}
for line in config.splitlines():
    key, _, value = line.partition("=")
    settings[key.split(".")[-1]] = value.strip().strip("'\"")
index = os.environ.get("PIP_INDEX_URL") or settings.get("index-url") or "https://pypi.org/simple/"
cafile = os.environ.get("PIP_CERT") or settings.get("cert") or None
if index.startswith("file:"):
    sys.exit(0)
try:
    context = ssl.create_default_context(cafile=cafile)
    urllib.request.urlopen(index.rstrip("/") + "/pip/", timeout=15, context=context).close()
except Exception as exc:  # noqa: BLE001 - any reason is reported the same way, in one line
    reason = getattr(exc, "reason", None) or exc
    print(f"{sys.argv[1]}: the Python package index {index} does not answer ({reason}): connect this machine to it, "
          "or set PIP_INDEX_URL to a mirror (and PIP_CERT to the CA bundle it needs)", file=sys.stderr)
    sys.exit(1)
EOF

echo "$who: installing .[$extras] into $venv (pinned by constraints.txt)"
"$venv/bin/python" -m pip install -q --upgrade "pip==$pip_version" || die "upgrading pip in $venv failed (above)"
"$venv/bin/python" -m pip install -q -c constraints.txt -e ".[$extras]" || die "pip could not install .[$extras] (above)"
# The package folders go on sys.path as plain entries, so `python -m autostart` run from the repository root finds the
# package and not the same-named top-level folder (a namespace package).
"$venv/bin/python" -c 'import pathlib, site; pathlib.Path(site.getsitepackages()[0], "whisper_platform_src.pth").write_text("".join(str(pathlib.Path(d).resolve()) + "\n" for d in ("common", "whisper-faster", "whisperx", "autostart")))'
roles="${covers[*]}"
printf 'pins=%s\nroles=%s\npython=%s\n' "$pins" "$roles" "$v" >"$record"
for r in "${covers[@]}"; do touch "$(stamp "$r")"; done
created=0
