"""Updates without reloads: tell a running server to take the freshly written credentials.

One module per server, each an ``async def apply(...)`` that is bounded by a
timeout per attempt, retried with backoff (see ``policy``) and raises
``UpdateError`` when it gives up:

- ``haproxy``: ``set ssl cert`` + ``commit ssl cert`` (and the CA file) over the runtime API;
- ``postgres``: ``SELECT pg_reload_conf()`` (needs the ``postgres`` extra, psycopg);
- ``mysql``: ``ALTER INSTANCE RELOAD TLS`` or ``FLUSH SSL`` (needs the ``mysql`` extra, PyMySQL).

Client libraries are imported only when their updater runs.
"""

from __future__ import annotations

from spiffe_bridge.updaters.policy import UpdateError, UpdatePolicy

__all__ = ["UpdateError", "UpdatePolicy"]
