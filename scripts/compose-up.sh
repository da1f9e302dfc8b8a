#!/usr/bin/env bash
# `make up`: the Docker deployment on this host.
#   0. checks, before anything is changed: WHISPER_DOMAIN, docker, compose, the engine, the ports;
#   1. the images are built when missing (scripts/build-images.sh --missing; `make images` rebuilds them);
#   2. the two services' containers are created STOPPED (`compose up --no-start`): the proxy wakes them;
#   3. the auto-start proxy runs on 127.0.0.1:8890 (systemd unit autostart/docker-autostart.service when
#      systemd runs, otherwise a background process with a pid file);
#   4. the Nginx sites for whisper.$WHISPER_DOMAIN and whisperx.$WHISPER_DOMAIN are rendered into /etc/nginx,
#      enabled, checked (nginx -t) and loaded.
#   5. one request per site through Nginx with the printed credentials (answered by the proxy without waking a
#      service); only then does it print `up:`.
# Before step 1 it checks what it can without changing anything: Nginx's worker user (the `user` directive of
# NGINX_DIR/nginx.conf) exists, an existing htpasswd file is readable by it, certificate folders are root's.
# It prints the model each service will load and warns when that model can be neither found nor downloaded.
# When a step fails, what this run created is removed again (containers, proxy, sites) and the exit status is 1;
# what was there before (a running deployment being upgraded) is left serving: replaced Nginx files are put back
# when `nginx -t` refuses the new ones.
# Environment: WHISPER_DOMAIN (required, e.g. example.com), WHISPER_CORS_ORIGINS (comma-separated Swagger
# portal origins), WHISPER_USER / WHISPER_PASSWORD (first basic-auth user), WHISPER_ETC (/etc/whisper-platform),
# NGINX_DIR (/etc/nginx; its nginx.conf is the one checked and loaded), NGINX_HTTPS_LISTEN (443) / NGINX_HTTP_LISTEN
# (80) / NGINX_LOG_DIR (/var/log/nginx) / ACME_WEBROOT (/var/www/letsencrypt), NGINX_RATE_LIMIT (10) /
# NGINX_RATE_LIMIT_BURST (60): requests per second and burst per client address, AUTOSTART_LISTEN (127.0.0.1:8890),
# WHISPER_FASTER_PORT (8001) / WHISPERX_PORT (8002): the services' loopback ports, WHISPER_IDLE_TIMEOUT (seconds
# without requests before the proxy stops a service; autostart/config.json's idleTimeout, 900), SKIP_NGINX=1 (leave Nginx
# alone), WHISPER_STATE_DIR (.run/deploy: pid file and log of the proxy when there is no systemd); the image build
# reads WHISPER_BASE, PYTHON_IMAGE, PIP_CA_BUNDLE, TORCH_INDEX_URL (see scripts/build-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
python="$root_dir/.venv/bin/python"
etc_dir="${WHISPER_ETC:-/etc/whisper-platform}"
nginx_dir="${NGINX_DIR:-/etc/nginx}"
listen="${AUTOSTART_LISTEN:-127.0.0.1:8890}"
state_dir="${WHISPER_STATE_DIR:-$root_dir/.run/deploy}"
pidfile="$state_dir/autostart.pid"
export WHISPER_FASTER_PORT="${WHISPER_FASTER_PORT:-8001}" WHISPERX_PORT="${WHISPERX_PORT:-8002}"
compose_dirs=(whisper-faster whisperx)
declare -A containers=([whisper-faster]=faster-whisper [whisperx]=whisperx)
declare -A ports=([whisper-faster]="$WHISPER_FASTER_PORT" [whisperx]="$WHISPERX_PORT")

die() { echo "make up: $*" >&2; exit 1; }

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

# --- 0. checks: nothing is changed until they pass -----------------------------------------------------------
[ -n "${WHISPER_DOMAIN:-}" ] || die "set WHISPER_DOMAIN (sites are whisper.\$WHISPER_DOMAIN and whisperx.\$WHISPER_DOMAIN)"
command -v docker >/dev/null 2>&1 || die "docker is not installed (Debian: apt-get install docker.io docker-compose, or Docker's own packages)"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
  compose=(docker-compose)
else
  die "Docker Compose is missing (neither 'docker compose' nor 'docker-compose' runs): install docker-compose-plugin (Docker's packages) or docker-compose (Debian)"
fi
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer (is dockerd running, and may $(id -un) use /var/run/docker.sock?)"
[ -x "$python" ] || die "no virtual environment: run 'make install' first"
for dir in "${compose_dirs[@]}"; do
  [ -f "$dir/docker-compose.yml" ] || die "$dir/docker-compose.yml is missing"
done

port_free() {  # $1 = host, $2 = port: 0 when nothing listens there
  # SO_REUSEADDR, as every server sets it: connections of a stopped listener in TIME-WAIT do not count, so the
  # answer is the one the real bind will get (a port is taken only when a listener holds it).
  "$python" - "$1" "$2" <<'EOF'
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((sys.argv[1], int(sys.argv[2])))
    except OSError:
        sys.exit(1)
EOF
}
container_running() { [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
our_proxy_pid() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && cat "$pidfile"; }
systemd_proxy() { [ -d /run/systemd/system ] && systemctl is-active --quiet docker-autostart.service 2>/dev/null; }

for dir in "${compose_dirs[@]}"; do
  port="${ports[$dir]}"
  # A running container of ours holds its own port (a second `make up`): that is fine.
  if ! container_running "${containers[$dir]}" && ! port_free 127.0.0.1 "$port"; then
    die "port 127.0.0.1:$port (for $dir) is taken by another program: stop it, or choose another port with $( [ "$dir" = whisperx ] && echo WHISPERX_PORT || echo WHISPER_FASTER_PORT)=..."
  fi
done
proxy_was_running=0
if our_proxy_pid >/dev/null || systemd_proxy; then
  proxy_was_running=1
elif ! port_free "${listen%:*}" "${listen##*:}"; then
  die "the proxy's address $listen is taken by another program: stop it, or set AUTOSTART_LISTEN=127.0.0.1:<port>"
fi
deploy() { $SUDO env PYTHONPATH="$root_dir/scripts" "$python" -m stack.deploy "$@"; }
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
nginx_conf="$nginx_dir/nginx.conf"
sites_were_enabled=0
if [ "${SKIP_NGINX:-0}" != 1 ]; then
  [ -x "$nginx_bin" ] || die "nginx is not installed (apt-get install nginx)"
  [ -f "$nginx_conf" ] || die "$nginx_conf is missing (is NGINX_DIR=$nginx_dir Nginx's configuration folder?)"
  deploy preflight --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" --htpasswd "$nginx_dir/whisper.htpasswd" \
    || die "Nginx cannot serve the sites as this host is set up (above): nothing was changed"
  [ -L "$nginx_dir/sites-enabled/whisper.$WHISPER_DOMAIN.conf" ] && sites_were_enabled=1
fi

# --- what this run creates is undone when a later step fails; what was there before is left serving ---------
created_projects=()
started_proxy=0
enabled_sites=0
rollback() {
  status=$?
  [ $status -eq 0 ] && return
  echo "make up: failed; removing what this run created" >&2
  if [ $enabled_sites = 1 ]; then
    deploy disable-nginx --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" >&2 || true
    $SUDO "$nginx_bin" -c "$nginx_conf" -s reload 2>/dev/null || true
  fi
  if [ $started_proxy = 1 ]; then
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now docker-autostart.service >&2 || true
    elif pid="$(our_proxy_pid)"; then
      kill "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  fi
  for dir in "${created_projects[@]}"; do
    "${compose[@]}" --project-directory "$dir" -f "$dir/docker-compose.yml" down >&2 || true
  done
  exit "$status"
}
trap rollback EXIT

# --- 1. images -------------------------------------------------------------------------------------------------
echo "== images (built when missing; 'make images' rebuilds them)"
scripts/build-images.sh --missing whisper-faster whisperx || die "the image build failed (see above): nothing was installed"

# --- 2. service containers, created stopped ------------------------------------------------------------------
for dir in "${compose_dirs[@]}"; do
  echo "== $dir: creating the container $(printf %s "${containers[$dir]}") (stopped) on 127.0.0.1:${ports[$dir]}"
  docker inspect "${containers[$dir]}" >/dev/null 2>&1 || created_projects+=("$dir")
  # A running container (a second `make up`) is left running: up --no-start only recreates a changed one.
  "${compose[@]}" --project-directory "$dir" -f "$dir/docker-compose.yml" up --no-start --no-build \
    || die "creating the $dir container failed (see above)"
done
echo "== models"
model_args=()
for dir in "${compose_dirs[@]}"; do model_args+=(--service "$dir=${containers[$dir]}"); done
PYTHONPATH="$root_dir/scripts" "$python" -m stack.deploy models "${model_args[@]}"

# --- 3. the auto-start proxy -------------------------------------------------------------------------------------
echo "== auto-start proxy"
$SUDO mkdir -p "$etc_dir"
proxy_config="$etc_dir/autostart.json"
deploy proxy-config --domain "$WHISPER_DOMAIN" \
  --dest "$proxy_config" --port "whisper-faster=$WHISPER_FASTER_PORT" --port "whisperx=$WHISPERX_PORT" \
  ${WHISPER_IDLE_TIMEOUT:+--idle-timeout "$WHISPER_IDLE_TIMEOUT"}
"$python" -m autostart --config "$proxy_config" --check-config

unit_source="autostart/docker-autostart.service"
[ $proxy_was_running = 1 ] || started_proxy=1
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
  mkdir -p "$state_dir"
  if pid="$(our_proxy_pid)"; then
    echo "proxy: restarting pid $pid"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
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

# --- 4. Nginx ------------------------------------------------------------------------------------------------------
if [ "${SKIP_NGINX:-0}" = 1 ]; then
  echo "== Nginx: skipped (SKIP_NGINX=1)"
  exit 0
fi
echo "== Nginx sites"
site_args=()
IFS=',' read -r -a origins <<<"${WHISPER_CORS_ORIGINS:-}"
for origin in "${origins[@]}"; do
  [ -n "$origin" ] && site_args+=(--cors-origin "$origin")
done
https_port=443
https_listen=443
if [ -n "${NGINX_HTTPS_LISTEN:-}" ]; then
  site_args+=(--https-listen "$NGINX_HTTPS_LISTEN")
  https_port="${NGINX_HTTPS_LISTEN##*:}"
  https_listen="$NGINX_HTTPS_LISTEN"
fi
[ -n "${NGINX_HTTP_LISTEN:-}" ] && site_args+=(--http-listen "$NGINX_HTTP_LISTEN")
[ $sites_were_enabled = 1 ] || enabled_sites=1
# `sudo env` passes on only what is named here: the credentials and the rate limit.
$SUDO env PYTHONPATH="$root_dir/scripts" WHISPER_USER="${WHISPER_USER:-}" WHISPER_PASSWORD="${WHISPER_PASSWORD:-}" \
  ${NGINX_RATE_LIMIT:+NGINX_RATE_LIMIT="$NGINX_RATE_LIMIT"} \
  ${NGINX_RATE_LIMIT_BURST:+NGINX_RATE_LIMIT_BURST="$NGINX_RATE_LIMIT_BURST"} \
  "$python" -m stack.deploy nginx --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" --nginx-conf "$nginx_conf" \
  --proxy-address "$listen" --credentials-store "$etc_dir/credentials" --htpasswd "$nginx_dir/whisper.htpasswd" \
  --access-log-dir "${NGINX_LOG_DIR:-/var/log/nginx}" --acme-webroot "${ACME_WEBROOT:-/var/www/letsencrypt}" \
  --https-port "$https_port" "${site_args[@]}" || die "the Nginx sites could not be installed (above)"
if [ -d /run/systemd/system ] && [ "$nginx_conf" = /etc/nginx/nginx.conf ]; then
  $SUDO systemctl reload-or-restart nginx
elif ! $SUDO "$nginx_bin" -c "$nginx_conf" -s reload 2>/dev/null; then
  # Not running yet (reload found no pid): start it.
  $SUDO "$nginx_bin" -c "$nginx_conf" || die "nginx did not start (see above)"
fi
echo "== a request through Nginx per site"
$SUDO env PYTHONPATH="$root_dir/scripts" WHISPER_USER="${WHISPER_USER:-}" WHISPER_PASSWORD="${WHISPER_PASSWORD:-}" \
  "$python" -m stack.deploy check-sites --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" \
  --https-listen "${https_listen%% *}" --credentials-store "$etc_dir/credentials" \
  || die "the sites do not answer as they should (above)"
trap - EXIT
echo "up: https://whisper.$WHISPER_DOMAIN and https://whisperx.$WHISPER_DOMAIN (services start on their first request)"
