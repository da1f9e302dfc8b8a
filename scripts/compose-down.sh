#!/usr/bin/env bash
# `make down`: stops the Docker deployment that `make up` started: the proxy (its socket unit too), then the service
# containers (`compose down`: containers and network go; the volumes stay: model caches and /data, which holds jobs;
# `docker volume rm` them to start afresh), and disables the two Nginx sites (other sites on the host keep running).
# Environment: WHISPER_DOMAIN, NGINX_DIR, WHISPER_STATE_DIR as for `make up`; KEEP_NGINX=1 leaves the sites enabled.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
python="$root_dir/.venv/bin/python"
nginx_dir="${NGINX_DIR:-/etc/nginx}"
compose_dirs=(whisper-faster whisperx)

die() { echo "make down: $*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

echo "== auto-start proxy"
pidfile="${WHISPER_STATE_DIR:-$root_dir/.run/deploy}/autostart.pid"
if [ -d /run/systemd/system ] && systemctl list-unit-files docker-autostart.service >/dev/null 2>&1 \
    && systemctl cat docker-autostart.service >/dev/null 2>&1; then
  # The socket first: while it listens, a connection would start the service again.
  units=(docker-autostart.service)
  systemctl cat docker-autostart.socket >/dev/null 2>&1 && units=(docker-autostart.socket docker-autostart.service)
  $SUDO systemctl disable --now "${units[@]}"
  echo "proxy: systemd units stopped and disabled (${units[*]})"
elif [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  pid="$(cat "$pidfile")"
  kill "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && { echo "proxy $pid ignored SIGTERM for 20 s; killing it"; kill -9 "$pid"; }
  rm -f "$pidfile"
  echo "proxy: stopped"
else
  echo "proxy: not running"
fi

echo "== service containers"
command -v docker >/dev/null 2>&1 || die "docker is not installed: nothing to stop"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
  compose=(docker-compose)
else
  die "Docker Compose is missing (neither 'docker compose' nor 'docker-compose' runs)"
fi
for dir in "${compose_dirs[@]}"; do
  if [ -f "$dir/docker-compose.yml" ]; then
    "${compose[@]}" --project-directory "$dir" -f "$dir/docker-compose.yml" down
  fi
done

if [ "${KEEP_NGINX:-0}" = 1 ] || [ -z "${WHISPER_DOMAIN:-}" ]; then
  [ -z "${WHISPER_DOMAIN:-}" ] && echo "== Nginx: WHISPER_DOMAIN not set, sites left as they are"
  exit 0
fi
echo "== Nginx sites"
$SUDO env PYTHONPATH="$root_dir/scripts" "$python" -m stack.deploy disable-nginx --domain "$WHISPER_DOMAIN" \
  --nginx-dir "$nginx_dir"
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
nginx_conf="$nginx_dir/nginx.conf"
if [ -d /run/systemd/system ] && [ "$nginx_conf" = /etc/nginx/nginx.conf ]; then
  $SUDO systemctl reload nginx || true
elif [ -f "$nginx_conf" ]; then
  $SUDO "$nginx_bin" -c "$nginx_conf" -s reload 2>/dev/null || echo "nginx: not running, nothing to reload"
fi
echo "down."
