#!/usr/bin/env bash
# `make restore ARCHIVE=backups/whisper-….tar.gz`: an archive of `make backup` back onto this host (docs/backup.md).
# Refused, with nothing written, when the deployment runs ("make down first"), when the archive is truncated or damaged
# (it is read completely and every checksum checked first), when it was written by a newer release (a schema newer
# than this release knows), when the volumes or host files already hold other data (unless REPLACE=1), or when a
# volume lacks the space. It creates the service containers stopped when they do not exist (as `make up` does) to get
# their volumes, writes through the services' own images, checks that the restored databases open, and then says to
# run `make up`.
# Environment:
#   ARCHIVE          the archive to restore (required)
#   REPLACE          1: replace the data the volumes and the host files hold (default: refuse)
#   RESTORE_INCLUDE  restore only these parts, comma-separated (default: all the archive holds)
#   WHISPER_ETC / NGINX_DIR / WHISPER_STATE_DIR / AUTOSTART_LISTEN   as for `make up`
set -euo pipefail
[ -n "${ARCHIVE:-}" ] || { echo "make restore: set ARCHIVE (make restore ARCHIVE=backups/whisper-….tar.gz)" >&2; exit 1; }
archive="$(realpath -m "$ARCHIVE")"
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
python="$root_dir/.venv/bin/python"

die() { echo "make restore: $*" >&2; exit 1; }

[ -x "$python" ] || die "no virtual environment: run 'make install' first"
command -v docker >/dev/null 2>&1 || die "docker is not installed (Debian: apt-get install docker.io docker-compose)"
docker info >/dev/null 2>&1 \
  || die "the Docker Engine does not answer (is dockerd running, and may $(id -un) use /var/run/docker.sock?)"
args=()
[ "${REPLACE:-0}" = 1 ] && args+=(--replace)
[ -n "${RESTORE_INCLUDE:-}" ] && args+=(--include "$RESTORE_INCLUDE")
exec env PYTHONPATH="$root_dir/scripts" "$python" -m stack.restore "$archive" "${args[@]}" \
  --etc-dir "${WHISPER_ETC:-/etc/whisper-platform}" --nginx-dir "${NGINX_DIR:-/etc/nginx}" \
  --state-dir "${WHISPER_STATE_DIR:-$root_dir/.run/deploy}" --proxy-listen "${AUTOSTART_LISTEN:-127.0.0.1:8890}"
