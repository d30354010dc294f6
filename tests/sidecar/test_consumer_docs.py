"""docs/consumers: one page per consumer, each with both sides and a rotation section; configs load.

Every ``hcl`` block on these pages is a complete sidecar configuration: it must load
and plan (keys, formats, reload_* values) exactly as ``spiffe-bridge run`` would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spiffe_bridge.sidecar import plan
from spiffe_bridge.sidecar.config import build, parse_text

DOCS = Path(__file__).resolve().parents[2] / "docs" / "consumers"
PAGES = ("nginx", "haproxy", "envoy", "postgresql", "mysql", "java", "linkerd")


@pytest.mark.parametrize("name", PAGES)
def test_page_shows_both_sides_and_the_rotation(name: str) -> None:
    text = (DOCS / f"{name}.md").read_text()
    assert "## spiffe-bridge side" in text and "## On rotation" in text
    assert len(re.findall(r"^## ", text, re.M)) >= 3  # the consumer's own side too
    assert f"({name}.md)" in (DOCS / "README.md").read_text()


@pytest.mark.parametrize("name", PAGES)
def test_sidecar_blocks_load(name: str, tmp_path: Path) -> None:
    blocks = re.findall(r"```hcl\n(.*?)```", (DOCS / f"{name}.md").read_text(), re.S)
    assert blocks, f"{name}.md has no sidecar configuration"
    for block in blocks:
        # a password file the page refers to must exist for the plan to read it
        block = block.replace("/etc/app/spiffe-p12.pass", str(tmp_path / "p12.pass"))
        (tmp_path / "p12.pass").write_text("secret\n")
        config = build(parse_text(block, "hcl"), environ={})
        plans, _ = plan.build(config, {})
        assert plans
