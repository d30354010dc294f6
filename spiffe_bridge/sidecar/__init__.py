"""The ``spiffe-bridge run`` sidecar: a drop-in replacement for spiffe-helper.

Modules, in the order data flows:

* ``hcl``, ``schema``, ``env``, ``config`` -- read ``helper.conf`` (HCL, TOML or
  JSON), check every key against one table, apply environment overrides;
* ``plan`` -- which files go into which directory, rendered by ``formats``;
* ``runner`` (daemon and wrapper mode, on one event loop) with ``publisher`` (its
  one task that writes and reloads, in order), ``oneshot`` (init containers),
  ``jwt_refresh`` (the JWT tasks: bundle stream, tokens renewed at half-life);
* ``broker_outputs`` (broker mode: each referenced workload's SVID and tokens through the
  Broker API) with ``workload_feed`` (what each such output holds, and its readiness);
* ``actions`` -- what runs after a write: signal a PID file, ``cmd``, a wrapped
  program, or a reload command; ``process`` watches their children;
* ``outputs`` -- every output directory written on the loop, fsynced off it;
* ``status``, ``metrics``, ``logs`` -- what the sidecar reports (served by
  ``spiffe_bridge.health``, started by ``monitoring``); ``watchdog`` notices a stalled loop;
* ``cli`` -- argument wiring only.

See docs/sidecar.md for the configuration reference and exit codes.
"""
