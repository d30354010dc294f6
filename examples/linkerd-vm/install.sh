#!/bin/sh
# Lay out the VM side of the example (root, on the VM). It does not touch the cluster,
# does not fetch SPIRE or the proxy binary, and does not start anything.
#
# Before:  SPIRE binaries in /opt/spire/bin, linkerd2-proxy in /opt/linkerd-proxy
#          (both as in the Linkerd 2.15 guide), the Linkerd trust anchor in
#          /opt/spire/certs/ca.crt + ca.key [cluster].
# After:   users, config, units; then follow README.md "Bring it up".
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)

# Each user gets its own group of the same name; spiffe-relay.service joins the group
# linkerd-proxy (SupplementaryGroups=) to hand its socket to it (see README.md).
for user in spire spiffe-relay linkerd-proxy; do
    id -u "$user" >/dev/null 2>&1 ||
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$user"
done

install -d -o spire -g spire -m 0750 /opt/spire/data/server /opt/spire/data/agent
install -d -m 0755 /opt/spire/conf /opt/spire/bin /etc/linkerd-proxy
install -m 0644 "$HERE/spire/server.conf" "$HERE/spire/agent.conf" /opt/spire/conf/
install -m 0755 "$HERE/spire/agent-start.sh" "$HERE/spire/register.sh" /opt/spire/bin/
chown spire:spire /opt/spire/certs/ca.key && chmod 0600 /opt/spire/certs/ca.key
install -m 0644 "$HERE/proxy/mesh.env" /etc/linkerd-proxy/mesh.env

# spiffe-bridge is not on a package index: install the wheel built from this repository
# (`make dist` at the repository root), or point SPIFFE_BRIDGE_PACKAGE at another wheel.
if [ ! -x /opt/spiffe-bridge/bin/spiffe-bridge ]; then
    wheel=${SPIFFE_BRIDGE_PACKAGE:-$(ls "$HERE"/../../dist/spiffe_bridge-*.whl 2>/dev/null | tail -n 1)}
    if [ -z "$wheel" ]; then
        echo "no spiffe-bridge wheel: run 'make dist' in the repository first" >&2
        exit 1
    fi
    python3 -m venv /opt/spiffe-bridge
    /opt/spiffe-bridge/bin/pip install --quiet "$wheel"
fi

install -m 0644 "$HERE"/systemd/*.service /etc/systemd/system/
systemctl daemon-reload
echo "installed; next: README.md 'Bring it up'"
