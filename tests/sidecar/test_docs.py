"""docs/sidecar.md describes every key, environment variable, exit code and example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spiffe_bridge.sidecar import env_overrides as env
from spiffe_bridge.sidecar import exitcodes
from spiffe_bridge.sidecar.schema import Key
from spiffe_bridge.sidecar.settings import TOP_KEYS

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "sidecar.md").read_text()


@pytest.mark.parametrize("key", TOP_KEYS, ids=lambda k: k.name)
def test_every_key_is_documented(key: Key) -> None:
    name = key.name
    assert f"| `{name}` |" in DOC
    for sub in key.fields:
        assert f"`{name}.{sub.name}`" in DOC or f"`{name}[].{sub.name}`" in DOC, f"{name}.{sub.name}"


def test_block_and_jwt_environment_variables_are_documented() -> None:
    for name, path, _key in env.variables():
        if len(path) == 2:
            assert name in DOC, name
    for name in (env.JWT_AUDIENCE, env.JWT_EXTRA_AUDIENCES, env.JWT_SVID_FILE_NAME, "SPIFFE_ENDPOINT_SOCKET"):
        assert name in DOC, name


def test_exit_codes_are_documented() -> None:
    for code in (exitcodes.EXIT_OK, exitcodes.EXIT_FAILURE, exitcodes.EXIT_CONFIG, exitcodes.EXIT_UNAVAILABLE,
                 exitcodes.EXIT_NO_IDENTITY, exitcodes.EXIT_WRITE):  # fmt: skip
        assert re.search(rf"^\| {code} \|", DOC, re.MULTILINE), code


def test_documented_examples_exist() -> None:
    for name in re.findall(r"`([\w.-]+\.(?:conf|toml|service|yaml))`", DOC):
        assert (ROOT / "examples" / "sidecar" / name).exists(), name


def test_key_tables_are_the_generated_ones() -> None:
    """Regenerate with ``python -m spiffe_bridge.sidecar.keydocs`` after changing a key's declaration."""
    from spiffe_bridge.sidecar import keydocs

    assert keydocs.render(DOC) == DOC


def test_key_tables_render_every_declared_key_once() -> None:
    from spiffe_bridge.sidecar import hot_updates, keydocs, plan

    rows = re.findall(r"^\| `([\w.\[\]]+)` \|", keydocs.table(False) + "\n" + keydocs.table(True), re.M)
    expected = [k.name for k in TOP_KEYS]
    expected += [
        f"{k.name}{'[].' if k.kind == 'object_list' else '.'}{s.name}" for k in TOP_KEYS for s in k.fields
    ]
    expected += [f"outputs[].{k.name}" for k in plan.PASSWORD_KEYS + hot_updates.OUTPUT_KEYS]
    assert sorted(rows) == sorted(expected)
