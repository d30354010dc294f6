#!/bin/sh
# Steer the VM's traffic through linkerd2-proxy (rules of the Linkerd 2.15 guide).
# [VM, root] Inbound TCP goes to the proxy's inbound port 4143, outbound to 4140,
# except the proxy's own traffic (by its uid), loopback and the admin/ignored ports.
# The relay and SPIRE talk over Unix sockets and loopback, so they are not affected.
set -eu

PROXY_INBOUND_PORT=4143
PROXY_OUTBOUND_PORT=4140
PROXY_USER_UID=$(id -u linkerd-proxy)
INBOUND_PORTS_TO_IGNORE="4190,4191,4567,4568"
OUTBOUND_PORTS_TO_IGNORE="4567,4568"

iptables -t nat -N PROXY_INIT_REDIRECT
iptables -t nat -A PROXY_INIT_REDIRECT -p tcp --match multiport --dports "$INBOUND_PORTS_TO_IGNORE" -j RETURN
iptables -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-port "$PROXY_INBOUND_PORT"
iptables -t nat -A PREROUTING -j PROXY_INIT_REDIRECT

iptables -t nat -N PROXY_INIT_OUTPUT
iptables -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner "$PROXY_USER_UID" -j RETURN
iptables -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN
iptables -t nat -A PROXY_INIT_OUTPUT -p tcp --match multiport --dports "$OUTBOUND_PORTS_TO_IGNORE" -j RETURN
iptables -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-port "$PROXY_OUTBOUND_PORT"
iptables -t nat -A OUTPUT -j PROXY_INIT_OUTPUT
iptables-save -t nat
