#!/usr/bin/env bash
# `make up`: the Docker deployment on this host, and its upgrade: run again on a running deployment, it changes only
# what changed and loses nothing (docs/deployment.md, "Upgrading").
#   0. checks, before anything is changed: WHISPER_DOMAIN, docker, compose, the engine, the ports;
#   1. the images are built when missing (scripts/build-images.sh --missing; `make images` rebuilds them);
#   2. the two services' containers are created STOPPED (`compose up --no-start`): the proxy wakes them. A container
#      that compose would re-create (new image, changed settings) is first HELD by the running proxy
#      (POST /_autostart/hold/<service>: new requests wait as during a wake, those in flight finish, then the proxy
#      stops it), re-created, and released: the waiting requests wake the new container;
#   3. the auto-start proxy runs on 127.0.0.1:8890 (systemd units autostart/docker-autostart.{socket,service} when
#      systemd runs, otherwise a background process with a pid file). A running proxy is left alone when nothing
#      changed, reloaded (SIGHUP) when only its config file changed, and replaced without refusing a connection when
#      its code or unit changed (systemd: the socket unit holds the socket; background: a hand-over, SIGUSR2);
#   4. the Nginx sites for whisper.$WHISPER_DOMAIN and whisperx.$WHISPER_DOMAIN are rendered into /etc/nginx,
#      enabled, checked (nginx -t) and loaded (not reloaded when no file changed).
#   5. one request per site through Nginx with the printed credentials (answered by the proxy without waking a
#      service); only then does it print `up:`.
# Before step 1 it checks what it can without changing anything: Nginx's worker user (the `user` directive of
# NGINX_DIR/nginx.conf) exists, an existing htpasswd file is readable by it, certificate folders are root's.
# It prints the model each service will load and warns when that model can be neither found nor downloaded.
# When a step fails, what this run created is removed again (containers, proxy, sites), held services are released,
# and the exit status is 1; what was there before (a running deployment being upgraded) is left serving: replaced
# Nginx files are put back when `nginx -t` refuses the new ones, a proxy that does not take over leaves the old one.
# Environment: WHISPER_DOMAIN (required, e.g. example.com), WHISPER_CORS_ORIGINS (comma-separated Swagger
# portal origins), WHISPER_USER / WHISPER_PASSWORD (first basic-auth user), WHISPER_ETC (/etc/whisper-platform),
# NGINX_DIR (/etc/nginx; its nginx.conf is the one checked and loaded), NGINX_HTTPS_LISTEN (443) / NGINX_HTTP_LISTEN
# (80) / NGINX_LOG_DIR (/var/log/nginx) / ACME_WEBROOT (/var/www/letsencrypt), NGINX_RATE_LIMIT (10) /
# NGINX_RATE_LIMIT_BURST (60): requests per second and burst per client address, AUTOSTART_LISTEN (127.0.0.1:8890),
# WHISPER_FASTER_PORT (8001) / WHISPERX_PORT (8002): the services' loopback ports, WHISPER_IDLE_TIMEOUT (seconds
# without requests before the proxy stops a service; autostart/config.json's idleTimeout, 900), SKIP_NGINX=1 (leave Nginx
# alone), WHISPER_STATE_DIR (.run/deploy: pid file and logs of the proxy when there is no systemd),
# WHISPER_UPGRADE_DRAIN (120: seconds requests in flight get to finish before a held service is stopped),
# WHISPER_HOLD_SECONDS (drain + 180: a hold ends by itself after this, should this script die), WHISPER_PROXY_RESTART=1
# (replace the running proxy even when its code did not change), WHISPER_UP_FAIL_AT=<step> (tests: fail on purpose
# at images|held|containers|proxy|nginx|check, to prove the rollback); the image build reads WHISPER_BASE,
# PYTHON_IMAGE, PIP_CA_BUNDLE, TORCH_INDEX_URL (see scripts/build-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
python="$root_dir/.venv/bin/python"
etc_dir="${WHISPER_ETC:-/etc/whisper-platform}"
nginx_dir="${NGINX_DIR:-/etc/nginx}"
listen="${AUTOSTART_LISTEN:-127.0.0.1:8890}"
state_dir="${WHISPER_STATE_DIR:-$root_dir/.run/deploy}"
pidfile="$state_dir/autostart.pid"
drain="${WHISPER_UPGRADE_DRAIN:-120}"
hold_seconds="${WHISPER_HOLD_SECONDS:-$((drain + 180))}"
export WHISPER_FASTER_PORT="${WHISPER_FASTER_PORT:-8001}" WHISPERX_PORT="${WHISPERX_PORT:-8002}"
compose_dirs=(whisper-faster whisperx)
declare -A containers=([whisper-faster]=faster-whisper [whisperx]=whisperx)
declare -A ports=([whisper-faster]="$WHISPER_FASTER_PORT" [whisperx]="$WHISPERX_PORT")

die() { echo "make up: $*" >&2; exit 1; }
# A test proves the rollback by failing on purpose right after a step (WHISPER_UP_FAIL_AT=<step>).
fail_point() {
  if [ "${WHISPER_UP_FAIL_AT:-}" = "$1" ]; then die "failing after the step '$1' (WHISPER_UP_FAIL_AT)"; fi
  return 0
}

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
# What the proxy answering on $listen says about itself: "pid code config" (empty when none answers; an older proxy
# says only "ok": then pid and code are empty too).
proxy_identity() {
  curl -fsS --max-time 5 "http://$listen/_autostart/health" 2>/dev/null | "$python" -c '
import json, sys
try:
    about = json.load(sys.stdin)
except ValueError:
    sys.exit(0)
print(about.get("pid", ""), about.get("code", ""), about.get("config", ""))' 2>/dev/null || true
}
proxy_call() {  # $1 = path, $2 = max seconds: an admin call on the running proxy (loopback only)
  curl -sS --max-time "$2" -X POST -o /dev/stderr -w '%{http_code}' "http://$listen$1" 2>&1
}

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
held=()
release_held() {
  local service
  for service in "${held[@]}"; do
    curl -fsS --max-time 10 -X POST -o /dev/null "http://$listen/_autostart/release/$service" \
      || echo "warning: could not release $service on the proxy (its hold ends by itself within ${hold_seconds}s)" >&2
  done
  held=()
}
rollback() {
  status=$?
  [ $status -eq 0 ] && return
  echo "make up: failed; removing what this run created" >&2
  release_held
  if [ $enabled_sites = 1 ]; then
    deploy disable-nginx --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" >&2 || true
    $SUDO "$nginx_bin" -c "$nginx_conf" -s reload 2>/dev/null || true
  fi
  if [ $started_proxy = 1 ]; then
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now docker-autostart.service docker-autostart.socket >&2 || true
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

fail_point images

# --- 2. the auto-start proxy: started, or left alone / reloaded / replaced without refusing a connection -------
# Before the containers, so that a new proxy (one that knows holds) re-creates them on an upgrade.
echo "== auto-start proxy"
$SUDO mkdir -p "$etc_dir"
proxy_config="$etc_dir/autostart.json"
# Rendered beside the live file and checked before it replaces it: a bad render never reaches a running proxy.
deploy proxy-config --domain "$WHISPER_DOMAIN" \
  --dest "$proxy_config.new" --port "whisper-faster=$WHISPER_FASTER_PORT" --port "whisperx=$WHISPERX_PORT" \
  ${WHISPER_IDLE_TIMEOUT:+--idle-timeout "$WHISPER_IDLE_TIMEOUT"} >/dev/null
"$python" -m autostart --config "$proxy_config.new" --check-config >/dev/null \
  || { $SUDO rm -f "$proxy_config.new"; die "the rendered proxy config does not validate (above)"; }
if $SUDO cmp -s "$proxy_config.new" "$proxy_config"; then
  $SUDO rm -f "$proxy_config.new"
else
  $SUDO mv -f "$proxy_config.new" "$proxy_config"
  echo "wrote $proxy_config"
fi
want_code="$("$python" -m autostart --fingerprint)"
want_config="$($SUDO sha256sum "$proxy_config" | cut -c1-16)"
read -r run_pid run_code run_config <<<"$(proxy_identity)" || true
wait_for_proxy() {  # $1 = seconds, $2 = what must hold: a shell test on run_pid/run_code/run_config
  local _
  for _ in $(seq 1 $(($1 * 5))); do
    read -r run_pid run_code run_config <<<"$(proxy_identity)" || true
    eval "$2" && return 0
    sleep 0.2
  done
  return 1
}
restart_wanted=0
if [ "${WHISPER_PROXY_RESTART:-0}" = 1 ] || [ -z "$run_code" ] || [ "$run_code" != "$want_code" ]; then
  restart_wanted=1
fi

unit_dir=/etc/systemd/system
[ $proxy_was_running = 1 ] || started_proxy=1
if [ -d /run/systemd/system ] && [ -f autostart/docker-autostart.service ]; then
  # The units (the proxy team's) run /opt/whisper-platform as user `autostart`; make up's own drop-ins point them at
  # this checkout, the config rendered for the domain and the address. They are named 10-… so that local changes made
  # with `systemctl edit docker-autostart` (override.conf, read after them) win; make up never writes those.
  id autostart >/dev/null 2>&1 || $SUDO useradd --system --no-create-home --shell /usr/sbin/nologin autostart
  install_if_changed() {  # $1 = source, $2 = destination; status 0 when it changed
    $SUDO cmp -s "$1" "$2" 2>/dev/null && return 1
    $SUDO install -m 0644 "$1" "$2"
  }
  write_if_changed() {  # $1 = destination, stdin = its content; status 0 when it changed
    local content
    content="$(cat)"
    [ "$($SUDO cat "$1" 2>/dev/null)" = "$content" ] && return 1
    $SUDO mkdir -p "$(dirname "$1")"
    printf '%s\n' "$content" | $SUDO tee "$1" >/dev/null
  }
  units_changed=0
  socket_changed=0
  install_if_changed autostart/docker-autostart.service "$unit_dir/docker-autostart.service" && units_changed=1
  install_if_changed autostart/docker-autostart.socket "$unit_dir/docker-autostart.socket" && units_changed=1
  printf '[Service]\nWorkingDirectory=%s\nExecStart=\nExecStart=%s --config %s --listen %s\nProtectHome=read-only\n' \
    "$root_dir" "$root_dir/.venv/bin/autostart" "$proxy_config" "$listen" \
    | write_if_changed "$unit_dir/docker-autostart.service.d/10-whisper-platform.conf" && units_changed=1
  printf '[Socket]\nListenStream=\nListenStream=%s\n' "$listen" \
    | write_if_changed "$unit_dir/docker-autostart.socket.d/10-whisper-platform.conf" && socket_changed=1
  if [ -f "$unit_dir/docker-autostart.service.d/whisper-platform.conf" ]; then
    $SUDO rm -f "$unit_dir/docker-autostart.service.d/whisper-platform.conf"  # an older make up's, read after override.conf
    units_changed=1
  fi
  as_autostart=(sudo -u autostart)
  [ "$(id -u)" -eq 0 ] && as_autostart=(runuser -u autostart --)
  "${as_autostart[@]}" test -r "$proxy_config" -a -x "$root_dir/.venv/bin/python" 2>/dev/null \
    || echo "warning: user autostart cannot read $proxy_config or run $root_dir/.venv (deploy under /opt/whisper-platform)" >&2
  if [ $units_changed = 1 ] || [ $socket_changed = 1 ]; then $SUDO systemctl daemon-reload; fi
  $SUDO systemctl enable --quiet docker-autostart.socket docker-autostart.service
  if ! systemctl is-active --quiet docker-autostart.socket || [ $socket_changed = 1 ]; then
    # A first install, a new address, or a proxy from before socket activation that bound the port itself: it
    # stops first, and connections are refused until the socket listens (this once).
    if systemctl is-active --quiet docker-autostart.service; then
      echo "proxy: moving docker-autostart to its socket unit on $listen (refuses connections for a moment, once)"
      $SUDO systemctl stop docker-autostart.service
    fi
    $SUDO systemctl restart docker-autostart.socket
    $SUDO systemctl start docker-autostart.service
    echo "proxy: systemd units docker-autostart.socket + .service started (journalctl -u docker-autostart)"
  elif ! systemctl is-active --quiet docker-autostart.service; then
    $SUDO systemctl start docker-autostart.service
    echo "proxy: docker-autostart.service started (journalctl -u docker-autostart)"
  elif [ $units_changed = 1 ] || [ $restart_wanted = 1 ]; then
    # The socket unit keeps listening: connections wait in its backlog while the proxy restarts.
    $SUDO systemctl restart docker-autostart.service
    echo "proxy: docker-autostart.service restarted (new code or unit; the socket kept accepting)"
  elif [ "$run_config" != "$want_config" ]; then
    $SUDO systemctl reload docker-autostart.service
    # shellcheck disable=SC2016  # the test is evaluated by wait_for_proxy on each try, not here
    wait_for_proxy 30 '[ "$run_config" = "$want_config" ]' \
      || die "the proxy refused the new config $proxy_config (journalctl -u docker-autostart): the old one stays in force"
    echo "proxy: config reloaded (systemctl reload docker-autostart)"
  else
    echo "proxy: unchanged (docker-autostart.service, pid $run_pid)"
  fi
else
  mkdir -p "$state_dir"
  start_background() {
    # The proxy writes its own log, rotated by size (--log-file); only what it prints before that (a crash at
    # start) goes to autostart.err, cut to its last 256 KiB here.
    local err="$state_dir/autostart.err"
    if [ -f "$err" ] && [ "$(stat -c %s "$err")" -gt 1048576 ]; then
      tail -c 262144 "$err" >"$err.tmp" && mv -f "$err.tmp" "$err"
    fi
    nohup setsid "$python" -m autostart --config "$proxy_config" --listen "$listen" \
      --log-file "$state_dir/autostart.log" --pid-file "$pidfile" >>"$err" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "proxy: background process $! (no systemd here; log: $state_dir/autostart.log)"
  }
  if pid="$(our_proxy_pid)"; then
    if [ $restart_wanted = 1 ] && [ -n "$run_code" ] && [ "$run_pid" = "$pid" ]; then
      # A hand-over: the new process takes the listening socket over before this one stops (no connection refused).
      echo "proxy: handing pid $pid over to a new process (new code)"
      kill -USR2 "$pid"
      # shellcheck disable=SC2016  # the test is evaluated by wait_for_proxy on each try, not here
      wait_for_proxy 90 '[ -n "$run_pid" ] && [ "$run_pid" != "$pid" ] && [ "$run_code" = "$want_code" ]' \
        || die "the new proxy did not take over within 90 s (log: $state_dir/autostart.log); pid $pid keeps serving"
      echo "proxy: pid $run_pid took over from pid $pid"
    elif [ $restart_wanted = 1 ]; then
      echo "proxy: restarting pid $pid (it predates hand-overs: connections are refused for a moment)"
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      start_background
    elif [ "$run_config" != "$want_config" ]; then
      kill -HUP "$pid"
      # shellcheck disable=SC2016  # the test is evaluated by wait_for_proxy on each try, not here
      wait_for_proxy 30 '[ "$run_config" = "$want_config" ]' \
        || die "the proxy refused the new config $proxy_config (log: $state_dir/autostart.log): the old one stays in force"
      echo "proxy: config reloaded (pid $pid)"
    else
      echo "proxy: unchanged (pid $pid)"
    fi
  else
    start_background
  fi
fi
for _ in $(seq 1 100); do
  curl -fsS "http://$listen/_autostart/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://$listen/_autostart/health" >/dev/null 2>&1 || die "the proxy does not answer on $listen"
read -r run_pid run_code run_config <<<"$(proxy_identity)" || true
fail_point proxy

# --- 3. service containers, created stopped; a running deployment's changed ones re-created under a hold --------
# Whether `compose up --no-start` would re-create an existing container: its config hash label against the one
# compose computes now (compose v1 puts the image id into it; v2 keeps the image id in a label of its own).
would_recreate() {  # $1 = compose dir, $2 = container (also its compose service name)
  local want have label image_id
  want="$("${compose[@]}" --project-directory "$1" -f "$1/docker-compose.yml" config --hash="$2" 2>/dev/null \
    | awk -v s="$2" '$1 == s {print $2}')"
  [ -n "$want" ] || return 0  # compose cannot say: assume it will (holding costs a restart, not a request)
  have="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.config-hash"}}' "$2" 2>/dev/null)"
  [ "$want" = "$have" ] || return 0
  label="$(docker inspect -f '{{index .Config.Labels "com.docker.compose.image"}}' "$2" 2>/dev/null)"
  if [ -n "$label" ] && [ "$label" != "<no value>" ]; then
    image_id="$(docker image inspect -f '{{.Id}}' "$(docker inspect -f '{{.Config.Image}}' "$2")" 2>/dev/null)"
    [ "$label" = "$image_id" ] || return 0
  fi
  return 1
}
for dir in "${compose_dirs[@]}"; do
  container="${containers[$dir]}"
  if docker inspect "$container" >/dev/null 2>&1; then
    if would_recreate "$dir" "$container"; then
      echo "== $dir: re-creating the container $container (new image or settings)"
      if [ -n "$run_code" ]; then
        # The proxy holds the service: new requests wait, those in flight finish (up to $drain s), it is stopped.
        echo "   holding $dir on the proxy (requests wait; those in flight get up to ${drain}s)"
        held+=("$dir")
        answer="$(proxy_call "/_autostart/hold/$dir?ttl=$hold_seconds&drain=$drain" $((drain + 120)))"
        [ "${answer: -3}" = 200 ] || die "the proxy could not hold $dir: ${answer%???} (HTTP ${answer: -3})"
        fail_point held
      fi
    else
      echo "== $dir: the container $container is up to date"
    fi
  else
    echo "== $dir: creating the container $container (stopped) on 127.0.0.1:${ports[$dir]}"
    created_projects+=("$dir")
  fi
  # An unchanged container is left as it is (running or not): up --no-start only re-creates a changed one.
  "${compose[@]}" --project-directory "$dir" -f "$dir/docker-compose.yml" up --no-start --no-build \
    || die "creating the $dir container failed (see above)"
  release_held  # the requests waiting on the hold wake the new container
done
fail_point containers
echo "== models"
model_args=()
for dir in "${compose_dirs[@]}"; do model_args+=(--service "$dir=${containers[$dir]}"); done
PYTHONPATH="$root_dir/scripts" "$python" -m stack.deploy models "${model_args[@]}"

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
# What make up writes into NGINX_DIR (scripts/stack/deploy.py), digested before and after: unchanged → no reload.
nginx_digest() {
  # shellcheck disable=SC2016  # $1 and $2 are the inner shell's arguments
  $SUDO sh -c 'cd "$1" 2>/dev/null || exit 0
    for f in conf.d/whisper-platform.conf snippets/*.conf sites-available/whisper."$2".conf \
        sites-available/whisperx."$2".conf whisper-selfsigned/*; do
      [ -f "$f" ] && printf "%s %s\n" "$f" "$(sha256sum <"$f")"
    done
    for link in sites-enabled/whisper."$2".conf sites-enabled/whisperx."$2".conf; do
      printf "%s -> %s\n" "$link" "$(readlink "$link")"
    done' _ "$nginx_dir" "$WHISPER_DOMAIN" | sha256sum
}
nginx_running() {
  if [ -d /run/systemd/system ] && [ "$nginx_conf" = /etc/nginx/nginx.conf ]; then
    systemctl is-active --quiet nginx
    return
  fi
  local nginx_pidfile
  nginx_pidfile="$(awk '$1 == "pid" {sub(/;$/, "", $2); print $2; exit}' "$nginx_conf" 2>/dev/null || true)"
  nginx_pidfile="${nginx_pidfile:-/run/nginx.pid}"
  [ -f "$nginx_pidfile" ] && $SUDO kill -0 "$(cat "$nginx_pidfile")" 2>/dev/null
}
nginx_before="$(nginx_digest)"
# `sudo env` passes on only what is named here: the credentials and the rate limit.
$SUDO env PYTHONPATH="$root_dir/scripts" WHISPER_USER="${WHISPER_USER:-}" WHISPER_PASSWORD="${WHISPER_PASSWORD:-}" \
  ${NGINX_RATE_LIMIT:+NGINX_RATE_LIMIT="$NGINX_RATE_LIMIT"} \
  ${NGINX_RATE_LIMIT_BURST:+NGINX_RATE_LIMIT_BURST="$NGINX_RATE_LIMIT_BURST"} \
  "$python" -m stack.deploy nginx --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" --nginx-conf "$nginx_conf" \
  --proxy-address "$listen" --credentials-store "$etc_dir/credentials" --htpasswd "$nginx_dir/whisper.htpasswd" \
  --access-log-dir "${NGINX_LOG_DIR:-/var/log/nginx}" --acme-webroot "${ACME_WEBROOT:-/var/www/letsencrypt}" \
  --https-port "$https_port" "${site_args[@]}" || die "the Nginx sites could not be installed (above)"
if [ "$(nginx_digest)" = "$nginx_before" ] && nginx_running; then
  echo "nginx: no file changed, not reloaded"
elif [ -d /run/systemd/system ] && [ "$nginx_conf" = /etc/nginx/nginx.conf ]; then
  $SUDO systemctl reload-or-restart nginx
elif ! $SUDO "$nginx_bin" -c "$nginx_conf" -s reload 2>/dev/null; then
  # Not running yet (reload found no pid): start it.
  $SUDO "$nginx_bin" -c "$nginx_conf" || die "nginx did not start (see above)"
fi
fail_point nginx
echo "== a request through Nginx per site"
$SUDO env PYTHONPATH="$root_dir/scripts" WHISPER_USER="${WHISPER_USER:-}" WHISPER_PASSWORD="${WHISPER_PASSWORD:-}" \
  "$python" -m stack.deploy check-sites --domain "$WHISPER_DOMAIN" --nginx-dir "$nginx_dir" \
  --https-listen "${https_listen%% *}" --credentials-store "$etc_dir/credentials" \
  || die "the sites do not answer as they should (above)"
fail_point check
trap - EXIT
echo "up: https://whisper.$WHISPER_DOMAIN and https://whisperx.$WHISPER_DOMAIN (services start on their first request)"
