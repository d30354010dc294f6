#!/usr/bin/env bash
# Run the VM side of this example on this machine, as an ordinary user, without a cluster,
# and check what the proxy would get. Nothing is installed; everything lives in a temp dir.
#
#   * a stand-in "Linkerd trust anchor" made with openssl (in real life: the cluster's);
#   * SPIRE server + agent from spire/*.conf (paths moved into the temp dir) when
#     spire-server/spire-agent are found ($SPIRE_BIN_DIR or PATH); otherwise the
#     spiffe-bridge dev agent stands in for SPIRE;
#   * the relay and linkerd-env --watch with the ExecStart lines of systemd/*.service;
# (all as the calling user: the units' User=/Group=, socket owner and directory modes are
# checked, as root, by tests/examples/test_linkerd_vm_units.py, not here),
# then checks: the relay shows only the proxy's SVID, the EnvironmentFile gives
# SERVER_ID/SERVER_NAME/socket exactly, and TRUST_ANCHORS is the anchor PEM byte for byte.
# With the dev agent it also rotates the root and checks the proxy restart ran once.
#
# Usage: examples/linkerd-vm/local-check.sh   (SPIFFE_BRIDGE=cmd to use another spiffe-bridge)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SB=${SPIFFE_BRIDGE:-spiffe-bridge}
TD=root.linkerd.cluster.local
WORKLOAD=spiffe://$TD/external-workload
OTHER=spiffe://$TD/other-app
WORK=$(mktemp -d /tmp/lvm-XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP:-}" = "" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; for f in "$WORK"/*.log; do echo "--- $f"; tail -n 20 "$f"; done >&2; exit 1; }

# wait_for DESCRIPTION COMMAND...: retry COMMAND for up to 30 s
wait_for() {
    local what=$1; shift
    for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    fail "timed out waiting for $what"
}

start() { local log=$1; shift; "$@" >"$WORK/$log.log" 2>&1 & PIDS+=("$!"); }

# moved: rewrite the example's absolute paths into the temp dir
moved() {
    sed -e "s#/opt/spire#$WORK/spire#g" -e "s#/run/#$WORK/run/#g" \
        -e "s#/opt/spiffe-bridge/bin/spiffe-bridge#$SB#g" "$@"
}

# exec_start UNIT: the unit's ExecStart= (continuation lines joined), paths moved
exec_start() {
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$HERE/systemd/$1" | sed -n 's/^ExecStart=//p' | moved
}

mkdir -p "$WORK/spire/certs" "$WORK/spire/conf" "$WORK/spire/bin" "$WORK/run"

echo "== stand-in Linkerd trust anchor"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$TD" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$WORK/spire/certs/ca.key" -out "$WORK/spire/certs/ca.crt" 2>/dev/null

BIN=${SPIRE_BIN_DIR:-$(dirname "$(command -v spire-server 2>/dev/null || echo /nonexistent/x)")}
AGENT_SOCKET=$WORK/run/spire/agent/public/api.sock
mkdir -p "$(dirname "$AGENT_SOCKET")"
if [ -x "$BIN/spire-server" ] && [ -x "$BIN/spire-agent" ]; then
    MODE=spire
    echo "== SPIRE server and agent from $BIN with spire/server.conf and spire/agent.conf"
    ln -s "$BIN/spire-server" "$BIN/spire-agent" "$HERE/spire/agent-start.sh" "$WORK/spire/bin/"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    moved -e "s#\"8081\"#\"$PORT\"#" "$HERE/spire/server.conf" > "$WORK/spire/conf/server.conf"
    moved -e "s#\"8081\"#\"$PORT\"#" "$HERE/spire/agent.conf" > "$WORK/spire/conf/agent.conf"
    mkdir -p "$WORK/spire/data/server" "$WORK/spire/data/agent" "$WORK/run/spire/server/private"
    SERVER_SOCKET=$WORK/run/spire/server/private/api.sock
    start spire-server "$BIN/spire-server" run -config "$WORK/spire/conf/server.conf"
    wait_for "spire-server" "$BIN/spire-server" healthcheck -socketPath "$SERVER_SOCKET"
    SPIRE_SERVER="$BIN/spire-server" SERVER_SOCKET="$SERVER_SOCKET" TOKEN_FILE="$WORK/spire/join-token" \
        RELAY_USER="$(id -un)" TOKEN_OWNER="$(id -un)" "$HERE/spire/register.sh" > "$WORK/register.log"
    # a second identity for the same user: the relay must not show it to the proxy
    "$BIN/spire-server" entry create -socketPath "$SERVER_SOCKET" -parentID "spiffe://$TD/agent/$(hostname -s)" \
        -spiffeID "$OTHER" -selector "unix:uid:$(id -u)" >> "$WORK/register.log"
    SPIRE_DIR="$WORK/spire" start spire-agent "$WORK/spire/bin/agent-start.sh"
    wait_for "spire-agent" "$BIN/spire-agent" healthcheck -socketPath "$AGENT_SOCKET"
    ANCHOR_PEM=$WORK/spire/certs/ca.crt
else
    MODE=dev-agent
    echo "== no SPIRE binaries (set SPIRE_BIN_DIR): the spiffe-bridge dev agent stands in"
    start dev-agent $SB dev-agent --socket "$AGENT_SOCKET" --trust-domain "$TD" \
        --spiffe-id "$OTHER" --spiffe-id "$WORKLOAD"
    wait_for "dev agent" test -S "$AGENT_SOCKET"
    ANCHOR_PEM=$WORK/anchor.pem
fi

echo "== relay, as systemd/spiffe-relay.service runs it"
mkdir -p "$WORK/run/spiffe-relay" "$WORK/run/linkerd-identity"
# Everything runs as the user who runs this script, so the socket is left to that user
# (--socket-owner dropped) and the units' users, groups and directory modes are NOT checked
# here: tests/examples/test_linkerd_vm_units.py runs the units as their users (as root).
relay_cmd=$(exec_start spiffe-relay.service | sed -e "s#--socket-owner [^ ]*##")
eval "set -- $relay_cmd"
echo "   NOT checked here: the units' users, groups and modes (see tests/examples/test_linkerd_vm_units.py)"
start relay "$@"
RELAY=$WORK/run/spiffe-relay/proxy.sock
wait_for "relay socket" test -S "$RELAY"
wait_for "an SVID through the relay" $SB fetch x509 --address "unix://$RELAY" --timeout 2

shown=$($SB fetch x509 --address "unix://$RELAY" --json | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["svids"]))')
[ "$shown" = "$WORKLOAD" ] || fail "relay showed [$shown], want only $WORKLOAD"
echo "   relay shows the proxy only $shown"
if [ "$MODE" = dev-agent ]; then
    $SB fetch x509 --address "unix://$AGENT_SOCKET" --write "$WORK/direct" --layout flat >/dev/null
    cp "$WORK/direct/svid_bundle.pem" "$ANCHOR_PEM"
fi

echo "== linkerd-env --watch, as systemd/linkerd-identity.service runs it"
cat > "$WORK/restart-proxy" <<EOS
#!/bin/sh
echo restart >> "$WORK/restarts"
EOS
chmod +x "$WORK/restart-proxy"
env_cmd=$(exec_start linkerd-identity.service | sed -e "s#systemctl try-restart linkerd-proxy.service#$WORK/restart-proxy#")
eval "set -- $env_cmd"
start linkerd-env "$@"
ENV_FILE=$WORK/run/linkerd-identity/linkerd.env
wait_for "linkerd.env" grep -q "wrote [0-9]* files to" "$WORK/linkerd-env.log"

value() { bash -c 'set -a; . "$1"; printf %s "${!2}"' _ "$ENV_FILE" "$1"; }
[ "$(value LINKERD2_PROXY_IDENTITY_SERVER_ID)" = "$WORKLOAD" ] || fail "SERVER_ID"
[ "$(value LINKERD2_PROXY_IDENTITY_SERVER_NAME)" = "external-workload.cluster.local" ] || fail "SERVER_NAME"
[ "$(value LINKERD2_PROXY_IDENTITY_SPIRE_SOCKET)" = "unix://$RELAY" ] || fail "SPIRE_SOCKET"
[ "$(value LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS)" = "unix://$RELAY" ] || fail "WORKLOAD_API_ADDRESS"
value LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS > "$WORK/anchors-from-env.pem"
cmp -s "$WORK/anchors-from-env.pem" "$ANCHOR_PEM" || fail "TRUST_ANCHORS differs from $ANCHOR_PEM"
echo "   linkerd.env: SERVER_ID, SERVER_NAME, socket and TRUST_ANCHORS (= the anchor PEM) as expected"

if [ "$MODE" = dev-agent ]; then
    echo "== root rotation: the env file is rewritten and the proxy restarted once"
    kill -USR2 "${PIDS[0]}"   # dev agent: new root (the old one kept) and JWT key
    wait_for "proxy restart" test -s "$WORK/restarts"
    wait_for "new anchors in linkerd.env" sh -c "[ \$(bash -c 'set -a; . \"\$1\"; printf %s \"\$LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS\"' _ '$ENV_FILE' | grep -c BEGIN) -eq 2 ]"
    [ "$(wc -l < "$WORK/restarts")" -eq 1 ] || fail "expected one restart, got $(wc -l < "$WORK/restarts")"
    echo "   restart command ran once"
fi
echo "OK ($MODE)"
