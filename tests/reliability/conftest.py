"""Reliability suite: the ``--soak`` switch, hypothesis profiles and the soak-only skip.

``pytest tests/reliability`` runs the CI-sized suite (bounded to a few minutes on
2 cores). ``pytest tests/reliability --soak`` (or ``SPIFFE_BRIDGE_SOAK=1`` with any
pytest invocation) also runs the tests marked ``soak`` and multiplies the example
counts and loop lengths of the others (see ``reliability_support.scale``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

SOAK_ENV = "SPIFFE_BRIDGE_SOAK"
#: Per-test timeout (seconds) under --soak; the CI suite keeps pyproject's.
SOAK_TIMEOUT = 3600

# Examples per hypothesis test come from reliability_support.examples(); the profiles
# hold everything else. Neither profile is loaded globally: other suites keep theirs.
settings.register_profile(
    "spiffe-bridge-ci",
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "spiffe-bridge-soak",
    parent=settings.get_profile("spiffe-bridge-ci"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the long reliability soak variants (same as SPIFFE_BRIDGE_SOAK=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Set before test modules are imported, so example counts chosen at import see it.
    if config.getoption("--soak", default=False):
        os.environ[SOAK_ENV] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak runs take longer than the suite-wide per-test timeout allows."""
    if os.environ.get(SOAK_ENV) != "1":
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(SOAK_TIMEOUT))


@pytest.fixture(autouse=True)
def _soak_only(request: pytest.FixtureRequest) -> None:
    """Skip ``@pytest.mark.soak`` tests unless soaking."""
    if request.node.get_closest_marker("soak") and os.environ.get(SOAK_ENV) != "1":
        pytest.skip("soak variant: run with --soak or SPIFFE_BRIDGE_SOAK=1")
