#!/usr/bin/env bash
# `make backup`: one archive of the Docker deployment (docs/backup.md), safe while the services run and take jobs.
# Each service's data volume is read by a helper container of the service's own image (`docker run --volumes-from`,
# no network, uid 10001): SQLite through the online backup API, then exactly the files the snapshot's rows reference.
# The host's configuration, credentials and certificates are read as root (sudo when not root). A manifest records the
# release, every store's schema version and a SHA-256 per file. The archive is written under a temporary name
# (.whisper-….tar.gz.partial) and renamed only when complete: a full disk or a crash leaves no half archive that looks
# whole, and older archives are never touched. With JOBS_DATABASE_URL (PostgreSQL) the database is not in the archive
# (it says so): take it with pg_dump first.
# Environment:
#   BACKUP_DIR      where the archive goes (default: backups/ in the checkout): whisper-<UTC time>-<commit>.tar.gz, 0600
#   BACKUP_INCLUDE  what goes in, comma-separated (default: data,config,credentials,certificates)
#   WHISPER_ETC     the proxy config and credentials store (/etc/whisper-platform), as for `make up`
#   NGINX_DIR       Nginx's folder with whisper.htpasswd and whisper-selfsigned/ (/etc/nginx), as for `make up`
set -euo pipefail
backup_dir="$(realpath -m "${BACKUP_DIR:-$(dirname "$0")/../backups}")"
cd "$(dirname "$0")/.."
root_dir="$(pwd)"
python="$root_dir/.venv/bin/python"
include="${BACKUP_INCLUDE:-data,config,credentials,certificates}"

die() { echo "make backup: $*" >&2; exit 1; }

[ -x "$python" ] || die "no virtual environment: run 'make install' first"
if [[ ",$include," == *,data,* ]]; then
  command -v docker >/dev/null 2>&1 || die "docker is not installed: the data volumes cannot be read"
  docker info >/dev/null 2>&1 \
    || die "the Docker Engine does not answer (is dockerd running, and may $(id -un) use /var/run/docker.sock?)"
fi
exec env PYTHONPATH="$root_dir/scripts" "$python" -m stack.backup --backup-dir "$backup_dir" --include "$include" \
  --etc-dir "${WHISPER_ETC:-/etc/whisper-platform}" --nginx-dir "${NGINX_DIR:-/etc/nginx}"
