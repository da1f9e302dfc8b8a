#!/usr/bin/env bash
# Installs the Debian packages the project runs and tests with; a no-op when they are all there.
# Usage: scripts/install-system-deps.sh [runtime|all]
#   runtime: what `make run` needs (ffmpeg, nginx, openssl)
#   all:     plus what the test suite and benchmarks drive for real (prometheus: promtool checks the alert rules)
set -euo pipefail
profile="${1:-all}"
runtime=(ffmpeg nginx openssl curl ca-certificates)
testing=(espeak-ng sox chromium docker.io docker-compose mmdebstrap busybox-static wrk shellcheck postgresql prometheus)
packages=("${runtime[@]}")
[ "$profile" = all ] && packages+=("${testing[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}"
# Keep packaged daemons (nginx, docker) from starting themselves: we start what we need, on our own ports.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod +x "$policy" && created_policy=1
fi
trap '[ $created_policy = 1 ] && $SUDO rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
