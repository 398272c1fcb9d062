"""The HTML report shows the store's numbers, escapes what comes from files, and says what is missing.

Numbers are checked against the SQLite rows themselves (recomputed here with NumPy), not against the
report's own reader. The run directory is written from real explanations of the trained benchmark CNN
(``test_report_support``).
"""

from __future__ import annotations

import html
import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from xaiready.cli import main
from xaiready.runs.report import write_report

from .test_report_support import engine_run_dir, make_run_dir, run_dir  # noqa: F401 (fixtures)


class _Page(HTMLParser):
    """Score cells (``data-metric`` attributes), headline items and the page's text."""

    def __init__(self):
        super().__init__()
        self.cells: list[dict[str, str]] = []
        self.texts: list[str] = []
        self.headlines: list[str] = []
        self._in_headline = 0
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-metric" in a:
            self._cell = {**a, "text": ""}
            self.cells.append(self._cell)
        if tag == "li" and self._in_headline:
            self.headlines.append("")
        if tag == "ul" and a.get("id") == "headlines":
            self._in_headline = 1

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        if tag == "ul":
            self._in_headline = 0

    def handle_data(self, data):
        self.texts.append(data)
        if self._cell is not None:
            self._cell["text"] += data
        if self._in_headline and self.headlines:
            self.headlines[-1] += data


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def store_rows(folder: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(folder / "results.sqlite") as con:
        return list(con.execute(sql))


def stats_from_store(folder: Path) -> dict[tuple[str, str], tuple[float, float, int]]:
    per: dict[tuple[str, str], list[float]] = {}
    for method, metric, value in store_rows(folder, "SELECT method, metric, value FROM scores"):
        per.setdefault((method, metric), [])
        if value is not None:
            per[(method, metric)].append(value)
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in per.items()}


@pytest.fixture(scope="module", params=["hand-written", "xaiready-run"])
def written(request) -> tuple[Path, Path]:
    """(run directory, its report): rows written by hand from the contract, and by the real engine."""
    folder = request.getfixturevalue("run_dir" if request.param == "hand-written" else "engine_run_dir")
    return folder, write_report(folder)


def test_metric_table_equals_the_sqlite_rows(written):
    folder, page_path = written
    expected = stats_from_store(folder)
    cells = {(c["data-method"], c["data-metric"]): c for c in parse(page_path).cells}
    assert set(cells) == set(expected)  # every (method, metric) once, baselines included
    assert {m for m, _ in expected} == {"gradcam", "integrated-gradients", "random", "center"}
    for key, (mean, std, n) in expected.items():
        cell = cells[key]
        assert float(cell["data-mean"]) == pytest.approx(mean, rel=1e-12, abs=1e-15), key
        assert float(cell["data-std"]) == pytest.approx(std, rel=1e-9, abs=1e-12), key
        assert int(cell["data-n"]) == n and n >= 11, key
        assert cell["text"].startswith(f"{mean:.3f}"), (key, cell["text"])  # what a reader sees
        assert f"n={n}" in cell["text"]


def test_headline_compares_each_method_with_the_baselines(written):
    folder, page_path = written
    expected = stats_from_store(folder)
    higher = {"deletion": False, "insertion": True, "pointing-game": True}
    headlines = parse(page_path).headlines
    for method, name in (("gradcam", "Grad-CAM"), ("integrated-gradients", "Integrated Gradients")):
        line = next(t for t in headlines if t.startswith(name + " "))
        for baseline in ("random", "center"):
            wins = [m for m, up in higher.items()
                    if (expected[(method, m)][0] > expected[(baseline, m)][0]) == up
                    and expected[(method, m)][0] != expected[(baseline, m)][0]]
            if len(wins) == 3:
                assert f"{baseline} on all 3 metrics" in line, line
            elif wins:
                lost = ", ".join(m for m in higher if m not in wins)
                assert f"{baseline} on {len(wins)} of 3 metrics (not {lost})" in line, line
            else:
                assert f"does not beat {baseline}" in line, line


def test_hostile_image_name_is_escaped(written):
    folder, page_path = written
    (hostile,) = [i for (i,) in store_rows(folder, "SELECT image FROM images") if "<img" in i]
    text = page_path.read_text(encoding="utf-8")
    assert hostile not in text
    assert 'onerror="document.title' not in text
    assert html.escape(hostile, quote=True) in text
    assert hostile in "".join(parse(page_path).texts)  # shown to the reader as the name it is


def test_page_is_self_contained(written):
    text = written[1].read_text(encoding="utf-8")
    for needle in ("<link", "@import", "url(", 'src="http', "src='http", "fetch(", "XMLHttpRequest"):
        assert needle not in text, needle
    rest = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in rest and "https://" not in rest and 'src="//' not in rest
    assert text.count('src="data:image/png;base64,') >= 2 * 2 * 9  # input + overlay, 9 examples, 2 methods


def test_curve_band_reads_the_stored_curves(written):
    from xaiready.runs.report_data import read_run

    folder = written[0]
    rows = store_rows(folder, "SELECT fractions, \"values\" FROM curves WHERE method='gradcam' AND metric='deletion'")
    start = [json.loads(v)[0] for f, v in rows if json.loads(f)[0] == 0]
    end = [json.loads(v)[-1] for f, v in rows if json.loads(f)[-1] == 1]
    assert len(start) == len(end) == 12
    band = read_run(folder).curves["deletion"]["gradcam"]
    assert band.n == 12
    assert band.mean[0] == pytest.approx(np.mean(start)) and band.mean[-1] == pytest.approx(np.mean(end))
    assert band.low[0] == pytest.approx(np.percentile(start, 25))


def test_empty_states_no_metrics_no_labels_in_progress(tmp_path):
    partial = make_run_dir(tmp_path, n=3, methods=("gradcam",), metrics=(), labels=False, finished=False, total=20)
    with sqlite3.connect(partial / "results.sqlite") as con:  # the engine's table of unreadable images
        con.execute("CREATE TABLE failures(image TEXT PRIMARY KEY, path TEXT, error TEXT, batch INTEGER)")
        con.execute("INSERT INTO failures VALUES ('bad/<b>x</b>.png', '/x', 'not an image: truncated', 0)")
    text = write_report(partial).read_text(encoding="utf-8")
    page = " ".join("".join(parse(partial / "report.html").texts).split())
    assert 'id="in-progress"' in text and "This page shows the 4 of 20 images committed so far" in page
    assert "1 image could not be read and was skipped" in page and "not an image: truncated" in page
    assert "<b>x</b>" not in text and "bad/&lt;b&gt;x&lt;/b&gt;.png" in text
    assert "No metrics were asked for" in page and 'id="scores-table"' not in text
    assert "No labels: every target is the predicted class." in page
    assert "No deletion or insertion curves" in page
    assert "not ranked: no metric was asked for" in page  # the gallery still shows the maps


def test_cli_writes_the_report_and_fails_in_one_line(run_dir, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "elsewhere" / "page.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert out.is_file() and capsys.readouterr().out.strip() == f"report: {out}"
    assert 'href="../../' in out.read_text(encoding="utf-8")  # overlays linked relative to the page
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run directory" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert main(["report", str(broken)]) == 3
    assert "run.json is not valid JSON" in capsys.readouterr().err


def test_a_run_that_has_just_started(tmp_path):
    """run.json written, the store created, no batch committed yet, no readiness report: a page, not an error."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"schema": 1, "status": "running", "images": 10, "readiness": None,
                                                 "config": {"methods": ["gradcam"], "metrics": ["deletion"]}}))
    sqlite3.connect(folder / "results.sqlite").close()  # an empty database: no tables yet
    text = write_report(folder).read_text(encoding="utf-8")
    page = " ".join("".join(parse(folder / "report.html").texts).split())
    assert "No image has finished yet." in page and "This page shows the 0 of 10 images" in page
    assert 'data-verdict=""' in text and "not checked" in page
    assert "No deletion or insertion curves: the run has no curve rows yet." in page
    assert "No image has been scored yet on deletion." in page
