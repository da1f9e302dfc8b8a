#!/usr/bin/env bash
# `make images`: builds whisper-platform/{whisper-faster,whisperx,autostart}, each tagged `latest` and the git commit.
# `make images GPU=1` (IMAGE_VARIANT=cuda): the two services' CUDA images instead, tagged `cuda` and `cuda-<commit>`.
# Usage: scripts/build-images.sh [--missing] [--no-cache] [whisper-faster|whisperx|autostart ...]   (default: all three;
#        the services only for IMAGE_VARIANT=cuda: the proxy's image has no CUDA variant, its `latest` serves GPU hosts)
#   --missing   build only images whose tag (`latest`, or `cuda`) does not exist yet (what `make up` uses)
#   --no-cache  rebuild every layer (the layer cache is used otherwise)
# Environment:
#   WHISPER_BASE   auto (default): python:3.11-slim-bookworm if it is present or can be pulled, else a base made from
#                  Debian packages (mmdebstrap); `pull`: only the Docker Hub image; `debian`: only the Debian-made one.
#   PYTHON_IMAGE   use this base image as it is (any bookworm image with python3.11 and python3.11-venv).
#   DEBIAN_MIRROR  mirror for the Debian-made base (http://deb.debian.org/debian).
#   PIP_CA_BUNDLE  CA bundle pip must trust (default: the one pip is configured with here: PIP_CERT, `pip config`,
#                  else none). Passed as the BuildKit secret `pipca`: it never lands in a layer.
#   PIP_INDEX_URL / PIP_EXTRA_INDEX_URL  a PyPI mirror for the builds (air-gapped sites).
#   IMAGE_VARIANT  cpu (default) or cuda: cuda adds the extra `cuda` (cuBLAS 12, cuDNN 9: what CTranslate2 loads) to
#                  both services and takes PyPI's torch, a CUDA 12.8 build, for whisperx; `make images GPU=1` sets it.
#   TORCH_INDEX_URL  where whisperx gets torch: unset, PyTorch's CPU index if reachable
#                  (https://download.pytorch.org/whl/cpu), otherwise PyPI's torch (a CUDA build, several GB); empty,
#                  PyPI's torch; a URL, that index (e.g. a mirror). IMAGE_VARIANT=cuda: PyPI's unless a URL is set.
#   EXTRA_PIP_PACKAGES  more packages for both services' images (pinned by constraints.txt where it names them).
#   KEEP_IMAGES    older commit tags kept per image, for rollbacks (3; the newest ones)
#   IMAGE_PREFIX   whisper-platform
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "make images: $*" >&2; exit 1; }

missing_only=0
cache_args=()
services=()
for arg in "$@"; do
  case "$arg" in
    --missing) missing_only=1 ;;
    --no-cache) cache_args=(--no-cache) ;;
    whisper-faster|whisperx|autostart) services+=("$arg") ;;
    *) die "unknown argument '$arg' (services: whisper-faster whisperx autostart)" ;;
  esac
done
variant="${IMAGE_VARIANT:-cpu}"
case "$variant" in
  cpu) latest=latest; tag_prefix="" ;;
  cuda) latest=cuda; tag_prefix="cuda-" ;;
  *) die "IMAGE_VARIANT must be cpu or cuda (got '$variant'; \`make images GPU=1\` sets cuda)" ;;
esac
if [ "$variant" = cuda ]; then
  for service in "${services[@]}"; do
    [ "$service" != autostart ] || die "the proxy's image has no CUDA variant: build it without GPU=1 (its latest serves GPU hosts too)"
  done
  [ ${#services[@]} -gt 0 ] || services=(whisper-faster whisperx)
fi
[ ${#services[@]} -gt 0 ] || services=(whisper-faster whisperx autostart)
prefix="${IMAGE_PREFIX:-whisper-platform}"
hub_image="python:3.11-slim-bookworm"
debian_image="whisper-platform/python-base:3.11-bookworm"

# A docker client that builds with BuildKit (secrets, cache mounts): `docker buildx`, or a client that still has
# BuildKit built in (Docker < 23, e.g. Debian's docker.io) with DOCKER_BUILDKIT=1.
build_cmd=()
while read -r cli; do
  [ -n "$cli" ] || continue
  if "$cli" buildx version >/dev/null 2>&1; then
    build_cmd=("$cli" buildx build --load); docker_cli="$cli"; break
  fi
  if DOCKER_BUILDKIT=1 "$cli" build --help 2>/dev/null | grep -q -- '--secret'; then
    build_cmd=(env DOCKER_BUILDKIT=1 "$cli" build); docker_cli="$cli"; break
  fi
done < <(type -ap docker | awk '!seen[$0]++')
command -v docker >/dev/null 2>&1 || die "docker is not installed (Debian: apt-get install docker.io)"
[ ${#build_cmd[@]} -gt 0 ] || die "no docker client here builds with BuildKit: install the buildx plugin (docker-buildx-plugin or docker-buildx)"
"$docker_cli" info >/dev/null 2>&1 || die "the Docker Engine does not answer (is dockerd running, and may $(id -un) use it?)"

exists() { "$docker_cli" image inspect "$1" >/dev/null 2>&1; }

todo=()
for service in "${services[@]}"; do
  if [ $missing_only = 1 ] && exists "$prefix/$service:$latest"; then
    echo "== $prefix/$service:$latest exists"
  else
    todo+=("$service")
  fi
done
[ ${#todo[@]} -gt 0 ] || exit 0

debian_base() {
  if exists "$debian_image"; then echo "== base: $debian_image (made earlier from Debian packages)" >&2; return; fi
  command -v mmdebstrap >/dev/null 2>&1 || die "the base image needs mmdebstrap (apt-get install mmdebstrap), or set PYTHON_IMAGE"
  echo "== base: making $debian_image from Debian bookworm packages (mmdebstrap)" >&2
  local tar
  tar="$(mktemp --suffix=.tar)"
  # shellcheck disable=SC2064
  trap "rm -f '$tar'" EXIT
  # shellcheck disable=SC2016  # $1 is expanded by mmdebstrap (the root directory), not by this shell
  mmdebstrap --variant=minbase --include=python3.11,python3.11-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      --quiet bookworm "$tar" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2 \
    || die "mmdebstrap could not make the base image (is a Debian mirror reachable? set DEBIAN_MIRROR)"
  "$docker_cli" import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3.11"]' "$tar" "$debian_image" >/dev/null \
    || die "docker import of the base image failed"
  rm -f "$tar"
}

if [ -n "${PYTHON_IMAGE:-}" ]; then
  base="$PYTHON_IMAGE"
  exists "$base" || "$docker_cli" pull "$base" || die "PYTHON_IMAGE=$base is neither present nor pullable"
else
  case "${WHISPER_BASE:-auto}" in
    pull)
      base="$hub_image"
      exists "$base" || "$docker_cli" pull "$base" || die "cannot pull $base (no Docker Hub? use WHISPER_BASE=debian)" ;;
    debian)
      debian_base; base="$debian_image" ;;
    auto)
      if exists "$hub_image" || timeout 60 "$docker_cli" pull -q "$hub_image" >/dev/null 2>&1; then
        base="$hub_image"
      else
        echo "== $hub_image cannot be pulled: the base is made from Debian packages instead" >&2
        debian_base; base="$debian_image"
      fi ;;
    *) die "WHISPER_BASE must be auto, pull or debian (got '${WHISPER_BASE}')" ;;
  esac
fi
echo "== base image: $base"

# pip's CA bundle: PIP_CA_BUNDLE, else what pip on this host is configured with (environment or config files).
ca="${PIP_CA_BUNDLE:-${PIP_CERT:-}}"
if [ -z "$ca" ]; then
  for pip in .venv/bin/pip pip3 pip; do
    if command -v "$pip" >/dev/null 2>&1; then
      ca="$("$pip" config get global.cert 2>/dev/null || true)"; break
    fi
  done
fi
secret_args=()
if [ -n "$ca" ]; then
  [ -r "$ca" ] || die "the CA bundle $ca (PIP_CA_BUNDLE / pip's cert) is not readable"
  secret_args=(--secret "id=pipca,src=$ca")
  echo "== pip trusts $ca in the build (BuildKit secret, not stored in any layer)"
fi

# Unset and empty differ: empty means PyPI's torch (the CUDA build), as the guide says.
if [ "$variant" = cuda ]; then
  torch_index="${TORCH_INDEX_URL:-}"
else
  torch_index="${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
fi
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
tag="$tag_prefix$commit"
for service in "${todo[@]}"; do
  args=(--network host --build-arg "PYTHON_IMAGE=$base" "${secret_args[@]}" "${cache_args[@]}")
  [ -n "${PIP_INDEX_URL:-}" ] && args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")
  [ -n "${PIP_EXTRA_INDEX_URL:-}" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$PIP_EXTRA_INDEX_URL")
  if [ "$service" != autostart ]; then
    args+=(--build-arg "VARIANT=$variant")
    [ -n "${EXTRA_PIP_PACKAGES:-}" ] && args+=(--build-arg "EXTRA_PIP_PACKAGES=$EXTRA_PIP_PACKAGES")
  fi
  if [ "$service" = whisperx ]; then
    if [ -z "$torch_index" ]; then
      echo "== whisperx: torch from PyPI (a CUDA build, several GB)"
      args+=(--build-arg "TORCH_INDEX_URL=")
    elif curl -fsS --max-time 10 -o /dev/null "${torch_index%/}/torch/" 2>/dev/null; then
      echo "== whisperx: torch from $torch_index"
      args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
    else
      echo "== whisperx: $torch_index is not reachable: torch from PyPI (a CUDA build, several GB)"
      args+=(--build-arg "TORCH_INDEX_URL=")
    fi
    # torch's own layer is keyed by its pins only (see whisperx/Dockerfile).
    args+=(--build-arg "TORCH_PINS=$(grep -E '^(torch|torchaudio)==' constraints.txt | tr '\n' ' ')")
  fi
  echo "== building $prefix/$service:$latest ($commit, $variant)"
  start=$SECONDS
  if ! "${build_cmd[@]}" "${args[@]}" -f "$service/Dockerfile" \
      -t "$prefix/$service:$latest" -t "$prefix/$service:$tag" \
      --label "org.opencontainers.image.revision=$commit" --label "org.opencontainers.image.base.name=$base" \
      --label "io.whisper-platform.variant=$variant" .; then
    die "building $prefix/$service failed (the output above names the step); nothing was tagged"
  fi
  echo "== built $prefix/$service:$latest and :$tag in $((SECONDS - start)) s"
  # Older commit tags of this variant stay for rollbacks, the newest KEEP_IMAGES of them (each whisperx one can hold
  # GBs of its own); the other variant's tags are left alone.
  "$docker_cli" images --format '{{.Tag}}' "$prefix/$service" \
    | { grep -xE "${tag_prefix}([0-9a-f]{7,40}|unknown)" || true; } | { grep -vx -e "$tag" || true; } \
    | tail -n +"$(( ${KEEP_IMAGES:-3} + 1 ))" | while read -r old; do
      # A tag a container still uses stays (rmi refuses).
      if "$docker_cli" rmi "$prefix/$service:$old" >/dev/null 2>&1; then echo "== removed the old tag $prefix/$service:$old"; fi
    done
done
