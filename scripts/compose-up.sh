#!/usr/bin/env bash
# `make up`: the Docker deployment on this host.
#   1. the two services' containers are created STOPPED (`docker compose create`): the proxy wakes them;
#   2. the auto-start proxy runs on 127.0.0.1:8890 (systemd unit autostart/docker-autostart.service when
#      systemd runs, otherwise a background process with a pid file);
#   3. the Nginx sites for whisper.$WHISPER_DOMAIN and whisperx.$WHISPER_DOMAIN are rendered into /etc/nginx,
#      enabled, checked (nginx -t) and loaded.
# Environment: WHISPER_DOMAIN (required, e.g. example.com), WHISPER_CORS_ORIGINS (comma-separated Swagger
# portal origins), WHISPER_USER / WHISPER_PASSWORD (first basic-auth user), WHISPER_ETC (/etc/whisper-platform),
# NGINX_DIR (/etc/nginx), AUTOSTART_LISTEN (127.0.0.1:8890), SKIP_NGINX=1 (leave Nginx alone),
# WHISPER_STATE_DIR (.run/deploy: pid file and log of the proxy when there is no systemd).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
python="$root_dir/.venv/bin/python"
etc_dir="${WHISPER_ETC:-/etc/whisper-platform}"
nginx_dir="${NGINX_DIR:-/etc/nginx}"
listen="${AUTOSTART_LISTEN:-127.0.0.1:8890}"
compose_dirs=(whisper-faster whisperx)

die() { echo "make up: $*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

[ -n "${WHISPER_DOMAIN:-}" ] || die "set WHISPER_DOMAIN (sites are whisper.\$WHISPER_DOMAIN and whisperx.\$WHISPER_DOMAIN)"
command -v docker >/dev/null 2>&1 || die "docker is not installed (Debian: apt-get install docker.io docker-compose-plugin, or Docker's own packages)"
docker compose version >/dev/null 2>&1 || die "the Docker Compose plugin is missing ('docker compose' does not run): install docker-compose-plugin (or docker-compose-v2)"
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer (is dockerd running, and may $(id -un) use /var/run/docker.sock?)"
[ -x "$python" ] || die "no virtual environment: run 'make install' first"

for dir in "${compose_dirs[@]}"; do
  [ -f "$dir/docker-compose.yml" ] || die "$dir/docker-compose.yml is missing"
  echo "== $dir: building the image if needed and creating the container (stopped)"
  docker compose --project-directory "$dir" -f "$dir/docker-compose.yml" create
done

echo "== auto-start proxy"
$SUDO mkdir -p "$etc_dir"
proxy_config="$etc_dir/autostart.json"
$SUDO env PYTHONPATH="$root_dir/scripts" "$python" -m stack.deploy proxy-config --domain "$WHISPER_DOMAIN" --dest "$proxy_config"
"$python" -m autostart --config "$proxy_config" --check-config

unit_source="autostart/docker-autostart.service"
if [ -d /run/systemd/system ] && [ -f "$unit_source" ]; then
  # The unit (the proxy team's) runs /opt/whisper-platform as user `autostart`; a drop-in points it at this
  # checkout and at the config rendered for the domain.
  id autostart >/dev/null 2>&1 || $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin autostart
  $SUDO install -m 0644 "$unit_source" /etc/systemd/system/docker-autostart.service
  $SUDO mkdir -p /etc/systemd/system/docker-autostart.service.d
  printf '[Service]\nWorkingDirectory=%s\nExecStart=\nExecStart=%s --config %s --listen %s\nProtectHome=read-only\n' \
    "$root_dir" "$root_dir/.venv/bin/autostart" "$proxy_config" "$listen" \
    | $SUDO tee /etc/systemd/system/docker-autostart.service.d/whisper-platform.conf >/dev/null
  as_autostart=(sudo -u autostart)
  [ "$(id -u)" -eq 0 ] && as_autostart=(runuser -u autostart --)
  "${as_autostart[@]}" test -r "$proxy_config" -a -x "$root_dir/.venv/bin/python" 2>/dev/null \
    || echo "warning: user autostart cannot read $proxy_config or run $root_dir/.venv (deploy under /opt/whisper-platform)" >&2
  $SUDO systemctl daemon-reload
  $SUDO systemctl enable docker-autostart.service
  $SUDO systemctl restart docker-autostart.service
  echo "proxy: systemd unit docker-autostart.service (journalctl -u docker-autostart)"
else
  state_dir="${WHISPER_STATE_DIR:-$root_dir/.run/deploy}"
  mkdir -p "$state_dir"
  pidfile="$state_dir/autostart.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "proxy: restarting pid $(cat "$pidfile")"
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.2; done
  fi
  nohup setsid "$python" -m autostart --config "$proxy_config" --listen "$listen" \
    >>"$state_dir/autostart.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "proxy: background process $(cat "$pidfile") (no systemd here; log: $state_dir/autostart.log)"
fi
for _ in $(seq 1 100); do
  curl -fsS "http://$listen/_autostart/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://$listen/_autostart/health" >/dev/null 2>&1 || die "the proxy does not answer on $listen"

if [ "${SKIP_NGINX:-0}" = 1 ]; then
  echo "== Nginx: skipped (SKIP_NGINX=1)"
  exit 0
fi
echo "== Nginx sites"
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$nginx_bin" ] || die "nginx is not installed (apt-get install nginx)"
cors_args=()
IFS=',' read -r -a origins <<<"${WHISPER_CORS_ORIGINS:-}"
for origin in "${origins[@]}"; do
  [ -n "$origin" ] && cors_args+=(--cors-origin "$origin")
done
$SUDO env PYTHONPATH="$root_dir/scripts" WHISPER_USER="${WHISPER_USER:-}" WHISPER_PASSWORD="${WHISPER_PASSWORD:-}" \
  "$python" -m stack.deploy nginx --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" \
  --proxy-address "$listen" --credentials-store "$etc_dir/credentials" "${cors_args[@]}"
$SUDO "$nginx_bin" -t
if [ -d /run/systemd/system ]; then
  $SUDO systemctl reload-or-restart nginx
elif [ -f /run/nginx.pid ] && $SUDO kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  $SUDO "$nginx_bin" -s reload
else
  $SUDO "$nginx_bin"
fi
echo "up: https://whisper.$WHISPER_DOMAIN and https://whisperx.$WHISPER_DOMAIN (services start on their first request)"
