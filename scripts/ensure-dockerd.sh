#!/usr/bin/env bash
# Makes sure a Docker Engine answers: if `docker info` fails, starts dockerd in the background with settings
# that work inside a container without privileges for networking (vfs storage, no iptables, no bridge), and
# waits until it answers. Exit status 0 = an engine answers; anything else = it could not be started.
# Usage: scripts/ensure-dockerd.sh [timeout_seconds]
set -uo pipefail
timeout="${1:-60}"
state_dir="${DOCKERD_STATE_DIR:-/tmp/ensure-dockerd}"
log="$state_dir/dockerd.log"
pidfile="$state_dir/dockerd.pid"

docker info >/dev/null 2>&1 && exit 0
command -v dockerd >/dev/null 2>&1 || { echo "dockerd not installed (apt-get install docker.io)" >&2; exit 2; }
mkdir -p "$state_dir"

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# Another caller may be starting it right now (parallel test sessions): only one of us launches it.
exec 9>"$state_dir/lock"
flock -w "$timeout" 9 || { echo "timed out waiting for the dockerd start lock" >&2; exit 3; }
if ! docker info >/dev/null 2>&1; then
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "dockerd (pid $(cat "$pidfile")) is running but not answering yet; waiting" >&2
  else
    echo "starting dockerd (log: $log)" >&2
    # setsid: the engine outlives the test session that started it, so later sessions reuse it.
    $SUDO setsid dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
      --pidfile="$pidfile" >>"$log" 2>&1 < /dev/null &
  fi
fi

deadline=$((SECONDS + timeout))
until docker info >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "dockerd did not answer within ${timeout}s; last log lines:" >&2
    tail -n 20 "$log" >&2 2>/dev/null
    exit 1
  fi
  sleep 0.5
done
exit 0
