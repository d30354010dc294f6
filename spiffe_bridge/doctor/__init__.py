"""Preflight checks an operator runs before opening a ticket (``spiffe-bridge doctor``).

Every check is a small function returning a :class:`~spiffe_bridge.doctor.result.CheckResult`
(name, ok, detail, fix). :mod:`.agent` checks the Workload API socket and what it
serves, :mod:`.identity` explains a PermissionDenied with this process's
attestation selectors, :mod:`.files` checks the sidecar's directories, command,
pid file, health port and output-specific consistency; :mod:`.runner` picks the
checks a configuration needs.
"""
