"""Fixtures that run a real SPIRE server + agent (see spire.py).

Fixtures:
  spire_bin_dir   (session)  Path holding spire-server, spire-agent (spiffe-helper if built).
                             Missing binaries: skip, or fail when CI=true.
  spire_session   (session)  one SpireDeployment shared by the whole run.
  spire           (function) spire_session, with the agent running; entries a test adds
                             are deleted and default entries it deleted are re-created
                             after the test, and an agent it killed is restarted.
  spiffe_helper_bin (session) Path of the spiffe-helper binary (same skip/fail rule).
  spire_factory   (function) factory(**SpireDeployment kwargs) -> a separate, started
                             deployment, torn down after the test.
  linkerd_proxy_bin (session) Path of linkerd2-proxy (scripts/install-linkerd-proxy.sh; same rule).
Env: SPIRE_BIN_DIR (binaries), LINKERD2_PROXY_BIN, CI=true (missing binaries fail instead of skip),
     SPIFFE_BRIDGE_CACHE (where scripts/install-spire.sh and install-linkerd-proxy.sh build).
All tests in this directory get the ``interop`` marker.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _support.binaries import spire_bin_dir as find_spire_bin_dir
from _support.ci import missing, require

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spire import Entry, SpireDeployment

_HERE = Path(__file__).resolve().parent
_TIMINGS: list[tuple[str, dict[str, float]]] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interop: needs real SPIRE / spiffe-helper binaries (scripts/install-spire.sh)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.interop)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _TIMINGS:
        return
    terminalreporter.section("SPIRE interop fixture wall time")
    for name, t in _TIMINGS:
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in t.items())
        terminalreporter.write_line(f"{name}: {parts}")


@pytest.fixture(scope="session")
def spire_bin_dir() -> Path:
    return find_spire_bin_dir()


@pytest.fixture(scope="session")
def spiffe_helper_bin(spire_bin_dir: Path) -> Path:
    """The spiffe-helper binary built next to SPIRE (skip, or fail with CI=true, when absent)."""
    path = spire_bin_dir / "spiffe-helper"
    require(
        os.access(path, os.X_OK),
        f"spiffe-helper not found in {spire_bin_dir}; run scripts/install-spire.sh (needs Go) to enable",
    )
    return path


@pytest.fixture(scope="session")
def linkerd_proxy_bin() -> Path:
    """The linkerd2-proxy binary (skip, or fail with CI=true, when it is not built)."""
    from linkerd_mesh import ProxyBinaryMissing, find_proxy_bin

    try:
        return find_proxy_bin()
    except ProxyBinaryMissing as exc:
        missing(str(exc))


def _start(bin_dir: Path, base: Path, name: str, **kwargs: Any) -> SpireDeployment:
    d = SpireDeployment(bin_dir, base, **kwargs)
    try:
        d.start()
    except BaseException:
        d.stop()
        raise
    return d


def _stop(name: str, d: SpireDeployment, started: float) -> None:
    t0 = time.monotonic()
    d.stop()
    timings = dict(d.timings)
    timings["teardown_s"] = time.monotonic() - t0
    timings["lifetime_s"] = time.monotonic() - started
    _TIMINGS.append((name, timings))


@pytest.fixture(scope="session")
def spire_session(spire_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpireDeployment]:
    started = time.monotonic()
    d = _start(spire_bin_dir, tmp_path_factory.mktemp("spire"), "spire_session")
    try:
        yield d
    finally:
        _stop("spire_session", d, started)


def _restore(d: SpireDeployment, before: dict[str, Entry]) -> None:
    changed = False
    now = {e.entry_id for e in d.entries}
    for e in list(d.entries):
        if e.entry_id not in before:
            d.delete_entry(e)
            changed = True
    for eid, e in before.items():
        if eid not in now:
            d.create_entry(
                e.spiffe_id,
                hint=e.hint,
                x509_svid_ttl=e.x509_svid_ttl,
                jwt_svid_ttl=e.jwt_svid_ttl,
                federates_with=e.federates_with,
                selectors=e.selectors,
                parent_id=e.parent_id,
                dns_names=e.dns_names,
            )
            changed = True
    if not d.agent.running:
        d.start_agent(wait_svids=False)
        changed = True
    if changed:
        d.wait_for_svids()


@pytest.fixture
def spire(spire_session: SpireDeployment) -> Iterator[SpireDeployment]:
    d = spire_session
    d.ensure_agent_running()
    before = {e.entry_id: e for e in d.entries}
    yield d
    _restore(d, before)


@pytest.fixture
def spire_factory(
    spire_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., SpireDeployment]]:
    made: list[tuple[str, SpireDeployment, float]] = []

    def make(**kwargs: Any) -> SpireDeployment:
        name = f"spire_factory[{len(made)}]"
        started = time.monotonic()
        d = _start(spire_bin_dir, tmp_path_factory.mktemp("spire-extra"), name, **kwargs)
        made.append((name, d, started))
        return d

    yield make
    for name, d, started in reversed(made):
        _stop(name, d, started)
