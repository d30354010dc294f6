#!/usr/bin/env bash
# Build pinned SPIRE (spire-server, spire-agent) and spiffe-helper from the Go
# module proxy into a versioned cache directory OUTSIDE the repository, for the
# interop tests (tests/interop) and for local experiments.
#
#   scripts/install-spire.sh                 # build if needed, print the bin dir (last stdout line)
#   scripts/install-spire.sh --print-bin-dir # print the bin dir only, never build (no Go needed)
#   scripts/install-spire.sh --force         # rebuild even when the binaries are cached
#
# Layout (SPIFFE_BRIDGE_CACHE defaults to $HOME/.cache/spiffe-bridge):
#   $SPIFFE_BRIDGE_CACHE/bin/spire-<v>_spiffe-helper-<v>/{spire-server,spire-agent,spiffe-helper}
#   $SPIFFE_BRIDGE_CACHE/src/spire-<v>/           scratch Go module used to build SPIRE
#   $SPIFFE_BRIDGE_CACHE/src/spiffe-helper-<v>/   scratch Go module used to build spiffe-helper
# The bin dir name carries both pins, so changing a pin builds into a new dir;
# each tool is rebuilt only when its own binaries are missing, so a second run
# takes seconds.
#
# Pins and why:
# - SPIRE v1.15.3. The proxy refuses `go install ...@v1.15.x` (no version list is
#   served) and refuses v1.15.0 and v1.15.4 outright; v1.15.1..v1.15.3 are served
#   when fetched as a tool of a scratch module (`go get -tool`). Their go.mod pins
#   github.com/Keyfactor/ejbca-go-client-sdk v1.1.0, which the proxy does NOT
#   serve (only v1.0.2 is), so the scratch module replaces it with v1.0.2. That
#   SDK is only used by SPIRE's optional "ejbca" UpstreamAuthority server plugin,
#   which the tests do not configure.
# - spiffe-helper v0.11.0 (github.com/spiffe/spiffe-helper, cmd/spiffe-helper);
#   its go.mod has no replace directives and builds as is.
# Each tool gets its own scratch module so that its dependency versions are the
# ones its own go.mod selects (not a merge of both projects' requirements).
set -euo pipefail

SPIRE_VERSION="v1.15.3"
SPIFFE_HELPER_VERSION="v0.11.0"
# replace directives applied to the SPIRE scratch module (see above)
SPIRE_REPLACES=(
  "github.com/Keyfactor/ejbca-go-client-sdk=github.com/Keyfactor/ejbca-go-client-sdk@v1.0.2"
)

CACHE_ROOT="${SPIFFE_BRIDGE_CACHE:-${HOME:-/tmp}/.cache/spiffe-bridge}"
BIN_DIR="$CACHE_ROOT/bin/spire-${SPIRE_VERSION}_spiffe-helper-${SPIFFE_HELPER_VERSION}"

force=0
case "${1:-}" in
  --print-bin-dir) echo "$BIN_DIR"; exit 0 ;;
  --force) force=1 ;;
  "") ;;
  -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

log() { echo "[install-spire] $*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  log "the Go toolchain is required (go not found on PATH)"
  exit 1
fi

mkdir -p "$BIN_DIR" "$CACHE_ROOT/src"

# One build at a time per cache (two sessions or a parallel CI step).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_ROOT/.install-spire.lock"
  flock 9
fi

# A clean, predictable Go environment: ignore the caller's -mod=vendor etc.
export GOFLAGS="-buildvcs=false"
export GO111MODULE=on
export CGO_ENABLED="${CGO_ENABLED:-1}" # SPIRE's sqlite datastore uses mattn/go-sqlite3 (cgo)
unset GOBIN

# A tool group is cached when its binaries exist and its stamp file records the
# exact recipe (module, version, ldflags, replaces) they were built with.
cached() { # cached <stamp name> <recipe> <binary>...
  local stamp="$BIN_DIR/.$1.stamp" recipe="$2" n
  shift 2
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$recipe" ] || return 1
  for n in "$@"; do [ -x "$BIN_DIR/$n" ] || return 1; done
  return 0
}

# build_tools <scratch dir> <module path> <version> <ldflags> <replaces (space separated)> <cmd>...
build_tools() {
  local dir="$1" mod="$2" ver="$3" ldflags="$4" replaces="$5"
  shift 5
  local cmds=("$@") r c
  mkdir -p "$dir"
  (
    cd "$dir"
    if [ ! -f go.mod ]; then
      go mod init "spiffe-bridge.local/build/$(basename "$dir")" >&2
    fi
    for r in $replaces; do go mod edit -replace "$r"; done
    for c in "${cmds[@]}"; do
      log "go get -tool $mod/$c@$ver"
      go get -tool "$mod/$c@$ver" >&2
    done
    local out
    out="$(mktemp -d "$dir/out.XXXXXX")"
    local pkgs=()
    for c in "${cmds[@]}"; do pkgs+=("$mod/$c"); done
    log "go build ${pkgs[*]} (takes minutes on a cold cache)"
    go build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}" >&2
    for c in "${cmds[@]}"; do
      mv -f "$out/$(basename "$c")" "$BIN_DIR/$(basename "$c")"
    done
    rmdir "$out"
  )
}

# The version strings must not carry the "v": SPIRE parses its own version as
# semver at start-up (sqlstore migrations) and panics on "v1.15.3".
SPIRE_LDFLAGS="-s -w -X github.com/spiffe/spire/pkg/common/version.gittag=${SPIRE_VERSION#v}"
HELPER_LDFLAGS="-s -w -X github.com/spiffe/spiffe-helper/pkg/version.gittag=${SPIFFE_HELPER_VERSION#v}"
spire_recipe="github.com/spiffe/spire $SPIRE_VERSION $SPIRE_LDFLAGS ${SPIRE_REPLACES[*]}"
helper_recipe="github.com/spiffe/spiffe-helper $SPIFFE_HELPER_VERSION $HELPER_LDFLAGS"

# check <binary> <expected version>: the binary starts and reports the pinned version
check() {
  local out
  if ! out="$("$BIN_DIR/$1" --version 2>&1)" || [ "$out" != "$2" ]; then
    log "$1 --version printed '$out' (wanted '$2'); removing it"
    rm -f "$BIN_DIR/$1"
    return 1
  fi
}

start=$SECONDS

if [ "$force" = 1 ] || ! cached spire "$spire_recipe" spire-server spire-agent; then
  rm -f "$BIN_DIR/.spire.stamp"
  build_tools "$CACHE_ROOT/src/spire-$SPIRE_VERSION" github.com/spiffe/spire "$SPIRE_VERSION" \
    "$SPIRE_LDFLAGS" "${SPIRE_REPLACES[*]}" cmd/spire-server cmd/spire-agent
  check spire-server "${SPIRE_VERSION#v}"
  check spire-agent "${SPIRE_VERSION#v}"
  echo "$spire_recipe" >"$BIN_DIR/.spire.stamp"
else
  log "spire-server, spire-agent $SPIRE_VERSION cached"
fi

if [ "$force" = 1 ] || ! cached spiffe-helper "$helper_recipe" spiffe-helper; then
  rm -f "$BIN_DIR/.spiffe-helper.stamp"
  build_tools "$CACHE_ROOT/src/spiffe-helper-$SPIFFE_HELPER_VERSION" github.com/spiffe/spiffe-helper \
    "$SPIFFE_HELPER_VERSION" "$HELPER_LDFLAGS" "" cmd/spiffe-helper
  check spiffe-helper "${SPIFFE_HELPER_VERSION#v}"
  echo "$helper_recipe" >"$BIN_DIR/.spiffe-helper.stamp"
else
  log "spiffe-helper $SPIFFE_HELPER_VERSION cached"
fi

log "done in $((SECONDS - start))s"
echo "$BIN_DIR"
