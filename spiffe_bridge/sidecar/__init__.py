"""The ``spiffe-bridge run`` sidecar: a drop-in replacement for spiffe-helper.

Modules, in the order data flows:

* ``hcl``, ``schema``, ``env``, ``config`` -- read ``helper.conf`` (HCL, TOML or
  JSON), check every key against one table, apply environment overrides;
* ``plan`` -- which files go into which directory, rendered by ``formats``;
* ``runner`` (daemon and wrapper mode), ``oneshot`` (init containers),
  ``jwt_refresh`` (JWT-SVIDs renewed at half-life);
* ``actions`` -- what runs after a write: signal a PID file, ``cmd``, a wrapped
  program, or a reload command;
* ``status``, ``health``, ``metrics``, ``logs`` -- what the sidecar reports;
* ``cli`` -- argument wiring only.

See docs/sidecar.md for the configuration reference and exit codes.
"""
