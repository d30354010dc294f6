#!/bin/sh
# Start spire-agent, with the join token from register.sh when there is one.
# A join token is single use; after the first attestation the agent keeps its own
# SVID in data_dir and starts from it, so passing the spent token again on a
# restart is harmless (checked with SPIRE 1.15: the agent starts from its SVID).
set -eu
SPIRE_DIR=${SPIRE_DIR:-/opt/spire}
token_file=$SPIRE_DIR/join-token
if [ -s "$token_file" ]; then
    set -- -joinToken "$(cat "$token_file")"
fi
exec "$SPIRE_DIR/bin/spire-agent" run -config "$SPIRE_DIR/conf/agent.conf" "$@"
