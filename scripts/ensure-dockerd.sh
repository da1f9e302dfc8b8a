#!/usr/bin/env bash
# Makes sure a Docker Engine answers: if `docker info` fails, starts dockerd in the background with settings
# that work inside a container without privileges for host networking (no iptables, no default bridge; user-defined
# compose networks and 127.0.0.1 port publishing still work through docker-proxy), and waits until it answers.
# Storage: overlay2 on a persistent data root (layers are cached between runs); vfs only where overlay2 fails.
# Exit status 0 = an engine answers; anything else = it could not be started.
# Usage: scripts/ensure-dockerd.sh [timeout_seconds]
# Environment: DOCKERD_STATE_DIR (/tmp/ensure-dockerd: log, pid, lock), DOCKERD_DATA_ROOT (/var/lib/docker),
#              DOCKERD_STORAGE_DRIVER (overlay2; vfs to skip the attempt).
set -uo pipefail
timeout="${1:-60}"
state_dir="${DOCKERD_STATE_DIR:-/tmp/ensure-dockerd}"
data_root="${DOCKERD_DATA_ROOT:-/var/lib/docker}"
driver="${DOCKERD_STORAGE_DRIVER:-overlay2}"
log="$state_dir/dockerd.log"
pidfile="$state_dir/dockerd.pid"

docker info >/dev/null 2>&1 && exit 0
command -v dockerd >/dev/null 2>&1 || { echo "dockerd not installed (apt-get install docker.io)" >&2; exit 2; }
mkdir -p "$state_dir"

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

launch() {  # $1 = storage driver, $2 = data root
  echo "starting dockerd with $1 on $2 (log: $log)" >&2
  $SUDO mkdir -p "$2"
  # setsid: the engine outlives the test session that started it, so later sessions reuse it. 9>&-: the start lock
  # is not inherited, else the engine and its containerd shims hold it for ever (a later start after a crash or a
  # kill -9 of dockerd waited for it and timed out: the reboot drill found it).
  $SUDO setsid dockerd --storage-driver="$1" --data-root="$2" --iptables=false --ip6tables=false --bridge=none \
    --pidfile="$pidfile" >>"$log" 2>&1 </dev/null 9>&- &
  launched=$!
}

# Another caller may be starting it right now (parallel test sessions): only one of us launches it.
exec 9>"$state_dir/lock"
flock -w "$timeout" 9 || { echo "timed out waiting for the dockerd start lock" >&2; exit 3; }
launched=""
if ! docker info >/dev/null 2>&1; then
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "dockerd (pid $(cat "$pidfile")) is running but not answering yet; waiting" >&2
  else
    launch "$driver" "$data_root"
  fi
fi

deadline=$((SECONDS + timeout))
until docker info >/dev/null 2>&1; do
  if [ -n "$launched" ] && ! kill -0 "$launched" 2>/dev/null && [ "$driver" != vfs ]; then
    # overlay2 refused (e.g. the data root is on overlayfs or tmpfs): vfs works everywhere, only slower and bigger.
    echo "dockerd with $driver exited; falling back to vfs" >&2
    tail -n 5 "$log" >&2 2>/dev/null
    driver=vfs
    launch vfs "${data_root%/}-vfs"
  fi
  if [ $SECONDS -ge $deadline ]; then
    echo "dockerd did not answer within ${timeout}s; last log lines:" >&2
    tail -n 20 "$log" >&2 2>/dev/null
    exit 1
  fi
  sleep 0.5
done
exit 0
