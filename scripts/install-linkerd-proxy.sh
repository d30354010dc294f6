#!/usr/bin/env bash
# Build linkerd2-proxy from the vendored source archives into a cache directory OUTSIDE the
# repository, for the Linkerd interop tests (tests/interop/test_linkerd_proxy_interop.py).
#
#   scripts/install-linkerd-proxy.sh               # build if needed, print the binary (last stdout line)
#   scripts/install-linkerd-proxy.sh --print-bin   # print the binary path only, never build
#   scripts/install-linkerd-proxy.sh --force       # rebuild even when the binary is cached
#
# Sources: $SPIFFE_BRIDGE_VENDOR (default: <repo>/../shared/vendor), which holds
#   linkerd2-proxy-*.tar.gz                    the proxy workspace
#   linkerd-kubert-kubert-prometheus-*.tar.gz  two crates the workspace takes from git
# The vendor dir may be read-only: everything is unpacked into the cache.
#
# Layout (SPIFFE_BRIDGE_CACHE defaults to $HOME/.cache/spiffe-bridge):
#   $SPIFFE_BRIDGE_CACHE/bin/linkerd2-proxy-<key>/linkerd2-proxy   the binary
#   $SPIFFE_BRIDGE_CACHE/src/linkerd2-proxy-<key>/                 unpacked, patched sources
#   $SPIFFE_BRIDGE_CACHE/src/linkerd2-proxy-target/                cargo target dir (shared by keys)
# <key> is a hash of both archives and of this script's build recipe, so a new archive or a new
# recipe builds into a new dir and an unchanged one is reused in milliseconds.
#
# Recipe and why (measured; see shared/vendor/README.md):
# - rust-toolchain.toml pins a toolchain that cannot be downloaded here; the installed stable
#   cargo builds the workspace, so the pin file is removed.
# - kubert-prometheus-{process,tokio} are git dependencies whose crates.io releases do not build
#   against the workspace's prometheus-client; they are pointed at the unpacked kubert archive.
# - RUSTFLAGS="--cfg tokio_unstable" as upstream's Dockerfile sets it.
# - debug profile without debug info: the fastest cold build (minutes on 2 cores).
set -euo pipefail

RECIPE_VERSION=1 # bump when the build steps below change, so cached binaries are rebuilt

repo="$(cd "$(dirname "$0")/.." && pwd)"
VENDOR_DIR="${SPIFFE_BRIDGE_VENDOR:-$repo/../shared/vendor}"
CACHE_ROOT="${SPIFFE_BRIDGE_CACHE:-${HOME:-/tmp}/.cache/spiffe-bridge}"

log() { echo "[install-linkerd-proxy] $*" >&2; }

mode=build
case "${1:-}" in
  --print-bin) mode=print ;;
  --force) mode=force ;;
  "") ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

one_archive() { # one_archive <glob>: the single archive matching <glob> in VENDOR_DIR
  local matches=("$VENDOR_DIR"/$1)
  [ -e "${matches[0]}" ] || matches=()
  if [ "${#matches[@]}" -ne 1 ]; then
    log "expected exactly one $1 in $VENDOR_DIR (set SPIFFE_BRIDGE_VENDOR); found ${#matches[@]}"
    exit 1
  fi
  echo "${matches[0]}"
}

PROXY_TGZ="$(one_archive 'linkerd2-proxy-*.tar.gz')"
KUBERT_TGZ="$(one_archive 'linkerd-kubert-*.tar.gz')"
key="$( { sha256sum "$PROXY_TGZ" "$KUBERT_TGZ" | cut -d' ' -f1; echo "recipe $RECIPE_VERSION"; } \
  | sha256sum | cut -c1-16)"
BIN_DIR="$CACHE_ROOT/bin/linkerd2-proxy-$key"
BIN="$BIN_DIR/linkerd2-proxy"

if [ "$mode" = print ]; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE_ROOT/bin" "$CACHE_ROOT/src"
# One build at a time per cache (two sessions, or a parallel CI step).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE_ROOT/.install-linkerd-proxy.lock"
  flock 9
fi

if [ "$mode" != force ] && [ -x "$BIN" ]; then
  log "linkerd2-proxy cached ($key)"
  echo "$BIN"
  exit 0
fi

# rustup installs into ~/.cargo/bin, which a non-login shell's PATH may lack.
command -v cargo >/dev/null 2>&1 || PATH="${CARGO_HOME:-${HOME:-/tmp}/.cargo}/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  log "a Rust toolchain is required (cargo not found on PATH; install it with rustup)"
  exit 1
fi

start=$SECONDS
SRC="$CACHE_ROOT/src/linkerd2-proxy-$key"
rm -rf "$SRC"
mkdir -p "$SRC"
# --no-same-permissions/-owner: the archives may come from a read-only tree; the copy must be ours.
tar -xzf "$PROXY_TGZ" -C "$SRC" --no-same-owner
tar -xzf "$KUBERT_TGZ" -C "$SRC" --no-same-owner
chmod -R u+w "$SRC"
ws="$SRC/linkerd2-proxy"
kubert="$SRC/linkerd-kubert"
[ -f "$ws/Cargo.toml" ] || { log "no linkerd2-proxy/Cargo.toml in $PROXY_TGZ"; exit 1; }
for crate in kubert-prometheus-process kubert-prometheus-tokio; do
  [ -f "$kubert/$crate/Cargo.toml" ] || { log "no linkerd-kubert/$crate in $KUBERT_TGZ"; exit 1; }
done

rm -f "$ws/rust-toolchain.toml" "$ws/rust-toolchain"
# Replace the git source of the two [workspace.dependencies.kubert-prometheus-*] tables with a
# path: drop their `git =`/`tag =`/`branch =`/`rev =` lines and add `path = ...`.
awk -v kubert="$kubert" '
  /^\[/ { table = $0; done = 0 }
  table ~ /^\[workspace\.dependencies\.kubert-prometheus-(process|tokio)\]$/ {
    if (!done) {
      name = table; sub(/^\[workspace\.dependencies\./, "", name); sub(/\]$/, "", name)
      if ($0 == table) { print; print "path = \"" kubert "/" name "\""; done = 1; next }
    }
    if ($0 ~ /^(git|tag|branch|rev)[ \t]*=/) next
  }
  { print }
' "$ws/Cargo.toml" >"$ws/Cargo.toml.new"
mv "$ws/Cargo.toml.new" "$ws/Cargo.toml"
if [ "$(grep -c "^path = \"$kubert/kubert-prometheus-" "$ws/Cargo.toml")" -ne 2 ]; then
  log "could not point the kubert-prometheus-* workspace dependencies at $kubert"
  exit 1
fi

log "cargo build -p linkerd2-proxy (takes many minutes on a cold cache)"
(
  cd "$ws"
  export RUSTFLAGS="--cfg tokio_unstable"
  export CARGO_PROFILE_DEV_DEBUG=0
  export CARGO_TARGET_DIR="$CACHE_ROOT/src/linkerd2-proxy-target"
  unset RUSTUP_TOOLCHAIN
  cargo build -p linkerd2-proxy >&2
)
mkdir -p "$BIN_DIR"
cp -f "$CACHE_ROOT/src/linkerd2-proxy-target/debug/linkerd2-proxy" "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"
log "built in $((SECONDS - start))s"
echo "$BIN"
