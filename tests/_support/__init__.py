"""Helpers shared by the whole test suite, imported as ``_support.<module>``.

pyproject's ``pythonpath = ["tests"]`` makes the package importable from any test
directory, in any combination of directories one pytest call collects.

- ``ci``: ``require()`` / ``missing()`` / ``require_binary()``, the one rule for a missing
  dependency: skip locally, fail under ``CI=true`` (``.ci/run`` sets it).
- ``wait``: ``wait_until()``, polling for effects that send no event.
- ``binaries``: ``spire_bin_dir()``, where the SPIRE and spiffe-helper binaries are.
- ``pki``: Workload API messages and PEM/DER from the dev agent's ``TrustDomainCA``,
  its current issuer for deliberately odd certificates, CRLs, an expired root.
- ``wire``: the Workload API security header spelled out independently of the library.

Layout rules: ``conftest.py`` files hold only fixtures and hooks (``tests/conftest.py``
those for every directory); pytest imports each as a module named ``conftest``, so
nothing imports from one. Helpers of one directory live beside its tests under a
unique name (``writers_pki``, ``sidecar_helpers``, ``tls_peers``...). The interop
harness (``tests/interop/spire.py``, ``spire_ca.py``) imports no ``spiffe_bridge`` on
purpose, so it builds its foreign CA itself and uses only ``ci``, ``wait`` and ``binaries``.
"""
