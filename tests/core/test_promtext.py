"""The shared Prometheus text renderer: escapes, types, summaries and /proc process metrics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from spiffe_bridge import promtext
from spiffe_bridge.promtext import Family


def test_labels_and_help_round_trip_through_a_parser() -> None:
    hostile = 'a "quoted" \\ back\nslash'
    page = promtext.render([
        Family("x_total", "counter", "help with \\ and\nnewline").add(3, dir=hostile),
        Family("empty", "gauge", "no samples: left out"),
        Family("d_seconds", "summary", "durations").add(0.25, "_sum").add(2, "_count"),
        Family("g", "gauge", "a float").add(1.5).add(float("inf"), side="up"),
    ]).decode()  # fmt: skip
    assert "empty" not in page and page.endswith("\n")
    families = {f.name: f for f in text_string_to_metric_families(page)}
    (sample,) = families["x"].samples  # the parser strips _total from counter family names
    assert sample.labels == {"dir": hostile} and sample.value == 3
    assert families["x"].documentation == "help with \\ and\nnewline"
    assert {s.name: s.value for s in families["d_seconds"].samples} == {
        "d_seconds_sum": 0.25,
        "d_seconds_count": 2,
    }
    assert [s.value for s in families["g"].samples] == [1.5, float("inf")]
    assert "x_total 3" not in page and 'x_total{dir="a \\"quoted\\" \\\\ back\\nslash"} 3' in page


def test_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric type"):
        Family("x", "histogramm", "typo")


def test_process_metrics_read_the_right_stat_fields(tmp_path: Path) -> None:
    (tmp_path / "self" / "fd").mkdir(parents=True)
    for n in range(4):
        (tmp_path / "self" / "fd" / str(n)).touch()
    # pid (comm with ") " inside) state ppid ... utime=14th, stime=15th, starttime=22nd, vsize, rss
    fields = ["S"] + ["0"] * 10 + ["300", "200"] + ["0"] * 6 + ["1000", "4096", "10"]
    (tmp_path / "self" / "stat").write_text("42 (we) ird) " + " ".join(fields) + " 0 0\n")
    (tmp_path / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    values = {f.name: f.samples[0][2] for f in promtext.process_families(str(tmp_path))}
    assert values["process_cpu_seconds_total"] == pytest.approx(500 / ticks)
    assert values["process_start_time_seconds"] == pytest.approx(1700000000 + 1000 / ticks)
    assert values["process_virtual_memory_bytes"] == 4096
    assert values["process_resident_memory_bytes"] == 10 * page
    assert values["process_open_fds"] == 4


def test_no_proc_means_no_process_metrics(tmp_path: Path) -> None:
    assert promtext.process_families(str(tmp_path / "missing")) == []
