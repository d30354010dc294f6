#!/bin/sh
# Register this VM's agent and the identity the Linkerd proxy will use.
#
# The entry's selector is the Unix user of the *relay* (spiffe-relay), because the
# relay is the only process that talks to the agent; it hands the SVID on to the
# proxy. The SPIFFE ID must equal ExternalWorkload .spec.meshTLS.identity
# (k8s/external-workload.yaml) and LINKERD2_PROXY_IDENTITY_SERVER_ID.
#
# Run as root on the VM after spire-server is up. Prints the join token the agent
# needs once (spire-agent.service reads it from /opt/spire/join-token).
set -eu

TRUST_DOMAIN=${TRUST_DOMAIN:-root.linkerd.cluster.local}
WORKLOAD_ID=${WORKLOAD_ID:-spiffe://$TRUST_DOMAIN/external-workload}
AGENT_ID=${AGENT_ID:-spiffe://$TRUST_DOMAIN/agent/$(hostname -s)}
RELAY_USER=${RELAY_USER:-spiffe-relay}
SPIRE_SERVER=${SPIRE_SERVER:-/opt/spire/bin/spire-server}
SERVER_SOCKET=${SERVER_SOCKET:-/run/spire/server/private/api.sock}
TOKEN_FILE=${TOKEN_FILE:-/opt/spire/join-token}
TOKEN_OWNER=${TOKEN_OWNER:-spire}  # spire-agent.service runs as this user

relay_uid=$(id -u "$RELAY_USER")

"$SPIRE_SERVER" token generate -socketPath "$SERVER_SOCKET" -spiffeID "$AGENT_ID" -ttl 600 \
    | sed -n 's/^Token: //p' > "$TOKEN_FILE"
chmod 0600 "$TOKEN_FILE"
if id -u "$TOKEN_OWNER" >/dev/null 2>&1; then chown "$TOKEN_OWNER" "$TOKEN_FILE"; fi

"$SPIRE_SERVER" entry create -socketPath "$SERVER_SOCKET" \
    -parentID "$AGENT_ID" \
    -spiffeID "$WORKLOAD_ID" \
    -selector "unix:uid:$relay_uid"

echo "join token written to $TOKEN_FILE; entry $WORKLOAD_ID for uid $relay_uid ($RELAY_USER)"
