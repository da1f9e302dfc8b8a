#!/usr/bin/env bash
# Installs the Debian packages the project runs and tests with; a no-op when they are all there.
# Usage: scripts/install-system-deps.sh runtime|all|python|packages NAME...
#   runtime:  what `make run` needs (ffmpeg, nginx, openssl, curl)
#   all:      plus what the test suite and benchmarks drive for real (prometheus: promtool checks the alert rules)
#   python:   Debian's python3 and its venv module, when that python3 is 3.11, 3.12 or 3.13 (scripts/python-env.sh
#             asks for it on a machine without a suitable interpreter); any other version is refused in one line
#   packages: the packages named (scripts/python-env.sh: python3.X-venv, the compiler and headers for webrtcvad)
# Not root: it uses sudo; without sudo, or where sudo needs a password and there is no terminal to ask on, it stops
# with one line naming the packages for root to install. Without a reachable Debian mirror: one line, exit 1.
# Environment: WHO (the name its messages start with, e.g. "make run"), APT_LOG (where apt's output goes; a temporary
# file by default, kept only when apt fails).
set -euo pipefail
profile="${1:-all}"
[ $# -gt 0 ] && shift
who="${WHO:-install-system-deps}"
die() { echo "$who: $*" >&2; exit 1; }

runtime=(ffmpeg nginx openssl curl ca-certificates)
testing=(espeak-ng sox chromium docker.io docker-compose mmdebstrap busybox-static wrk shellcheck postgresql prometheus)
case "$profile" in
  runtime) packages=("${runtime[@]}") ;;
  all) packages=("${runtime[@]}" "${testing[@]}") ;;
  python) packages=(python3 python3-venv) ;;
  packages) packages=("$@") ;;
  *) die "unknown profile '$profile' (runtime, all, python, packages NAME...)" ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null 2>&1 \
  || die "this is not a Debian or Ubuntu system (no apt-get): install ${missing[*]} (or their equivalents) by hand"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 \
    || die "installing Debian packages needs root and sudo is not installed: run it as root, or have root run: apt-get install ${missing[*]}"
  if ! sudo -n true 2>/dev/null && ! [ -t 0 ]; then
    die "installing Debian packages needs root and sudo asks $(id -un) for a password with no terminal to ask on: run it in a terminal, or have root run: apt-get install ${missing[*]}"
  fi
  SUDO=(sudo)
fi

log="${APT_LOG:-$(mktemp -t whisper-apt.XXXXXX)}"
keep_log=0
policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  [ $created_policy = 1 ] && "${SUDO[@]}" rm -f "$policy"
  [ $keep_log = 1 ] || [ -n "${APT_LOG:-}" ] || rm -f "$log"
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
# -o Acquire::Retries=0 and a short timeout: an unreachable mirror fails in seconds, not minutes.
apt=(apt-get -q -o Acquire::Retries=0 -o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20)
update() {
  # apt-get update exits 0 when a mirror is unreachable ("W: Failed to fetch"): its warnings tell.
  local out status=0
  out="$("${SUDO[@]}" "${apt[@]}" update 2>&1)" || status=$?
  printf '%s\n' "$out" >>"$log"
  [ $status -eq 0 ] && ! grep -qE '^(W|E): (Failed to fetch|Some index files failed)' <<<"$out"
}
if ! update; then
  keep_log=1
  die "apt-get update could not reach the Debian mirror (log: $log): connect this machine to it (or set a mirror in /etc/apt/sources.list), or install by hand: ${missing[*]}"
fi

if [ "$profile" = python ]; then
  # Debian's python3 is the interpreter a venv can be made with here; refuse a version the platform does not run.
  candidate="$(apt-cache policy python3 2>/dev/null | sed -n 's/^ *Candidate: *\([0-9]*\.[0-9]*\).*/\1/p')"
  case "$candidate" in
    3.11|3.12|3.13) ;;
    "") die "this system's package lists have no python3: install Python 3.11, 3.12 or 3.13 with its venv module, then run again with PYTHON=<that python>" ;;
    *) die "this system's Python is $candidate (Debian package python3) and the platform runs on 3.11, 3.12 or 3.13: install one of them with its venv module (e.g. python3.13 and python3.13-venv), then run again with PYTHON=python3.13" ;;
  esac
fi

echo "$who: installing Debian packages: ${missing[*]}"
# Keep packaged daemons (nginx, docker) from starting themselves: we start what we need, on our own ports.
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null && "${SUDO[@]}" chmod +x "$policy" && created_policy=1
fi
if ! "${SUDO[@]}" "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; then
  keep_log=1
  reason="$(grep -E '^E: ' "$log" | tail -n 1)"
  die "apt-get install ${missing[*]} failed${reason:+ ($reason)} (log: $log)"
fi
