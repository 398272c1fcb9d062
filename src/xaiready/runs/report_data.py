"""What the HTML report shows, read from a run directory (DESIGN 3.4) into plain Python values.

Everything is computed from ``results.sqlite`` (the rows are the truth, also while a run is still in
progress) and ``run.json`` (configuration, versions, readiness). The store is opened read-only, so a
report can be written while the engine is still committing batches.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptError, UsageError

BASELINES = ("random", "center")
CURVE_POINTS = 51  # the common fraction grid every image's curve is interpolated onto
EXAMPLES_PER_GROUP = 3  # best, median and worst images shown per method
MAX_HEALTH_ROWS = 500
MAX_IMAGE_ROWS = 2000
SLOWEST = 10


@dataclass(frozen=True)
class Stat:
    """A metric over the images of one method: mean and (population) std of the finite values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
        if not len(finite):
            return cls(float("nan"), float("nan"), 0)
        return cls(float(finite.mean()), float(finite.std()), len(finite))


@dataclass(frozen=True)
class Band:
    """One method's curves on a metric on a common grid: the mean, and the 25th to 75th percentile band
    (it stays inside the values' range, where mean +- std of a probability leaves [0, 1])."""

    grid: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int


@dataclass(frozen=True)
class Example:
    image: str
    value: float | None  # the ranking metric's value (None when no metric ranks the images)
    target: dict[str, Any]


@dataclass(frozen=True)
class Finding:
    image: str
    method: str
    check: str
    status: str
    message: str


@dataclass
class ReportData:
    run_dir: Path
    run: dict[str, Any]
    status: str
    images_total: int | None  # from run.json, when the engine knows it
    images: dict[str, dict[str, Any]]  # image -> its row in ``images``
    methods: list[str]  # explained methods, in configuration order
    baselines: list[str]
    metrics: list[str]
    higher_is_better: dict[str, bool]
    stats: dict[tuple[str, str], Stat]  # (method, metric) -> Stat
    scores: dict[tuple[str, str], dict[str, float]]  # (method, metric) -> {image: value}
    curves: dict[str, dict[str, Band]]  # metric -> method -> Band
    examples: dict[str, dict[str, list[Example]]]  # method -> {"best"|"median"|"worst"|"first": [...]}
    ranked_by: dict[str, str]  # method -> metric its examples are ranked by
    findings: list[Finding]
    warned_images: dict[str, int]  # method -> images with at least one warn/fail finding
    seconds: dict[str, dict[str, float]]  # image -> method -> seconds
    attributions: dict[tuple[str, str], dict[str, Any]]  # (image, method) -> path, target
    batches: int
    failures: list[dict[str, Any]] = field(default_factory=list)  # images that could not be read

    @property
    def images_done(self) -> int:
        return len(self.images)

    @property
    def images_seen(self) -> int:
        """Images the run has finished with, the unreadable ones included (what ``images`` counts)."""
        return len(self.images) + len(self.failures)

    @property
    def in_progress(self) -> bool:
        return self.status != "done"

    @property
    def labelled(self) -> int:
        return sum(1 for row in self.images.values() if row.get("label") is not None)

    @property
    def accuracy(self) -> float | None:
        pairs = [(r["label"], r["predicted"]) for r in self.images.values()
                 if r.get("label") is not None and r.get("predicted") is not None]
        return sum(a == b for a, b in pairs) / len(pairs) if pairs else None

    def all_methods(self) -> list[str]:
        return self.methods + self.baselines


def read_run(run_dir: str | Path) -> ReportData:
    """Read ``run_dir`` into a ``ReportData``; a missing or unreadable run directory is one clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"no run directory at {run_dir}", hint="give the --out folder of `xaiready run`")
    run = _read_run_json(run_dir)
    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise UsageError("no results.sqlite in this folder", path=str(run_dir),
                         hint="the run has not committed a batch yet")
    try:
        with _connect(db) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            rows = {name: _rows(con, name) if name in tables else []
                    for name in ("images", "attributions", "scores", "curves", "batches", "failures")}
    except sqlite3.DatabaseError as exc:
        raise CorruptError(f"results.sqlite cannot be read: {exc}", path=str(db)) from exc
    return _build(run_dir, run, rows)


def _read_run_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        raise UsageError("no run.json in this folder", path=str(run_dir),
                         hint="give the --out folder of `xaiready run`")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptError(f"run.json is not valid JSON: {exc}", path=str(path)) from exc
    if not isinstance(run, dict):
        raise CorruptError("run.json does not hold an object", path=str(path))
    return run


def _connect(db: Path) -> sqlite3.Connection:
    # read-only: never create, lock for writing or change a store the engine may still be writing
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    return con


def _rows(con: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    return [dict(r) for r in con.execute(f'SELECT * FROM "{table}"')]  # noqa: S608 (fixed table names)


def _json(text: Any, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return default


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _direction(metric: str) -> bool:
    """Whether higher is better for ``metric``: the registry's metadata (unknown metrics: higher)."""
    from ..metrics import METRICS

    try:
        return METRICS.get(metric)().higher_is_better
    except Exception:  # a metric this version does not know (a newer run): fall back, don't fail the page
        return True


def _ordered(preferred: list[str], found: set[str]) -> list[str]:
    """The configured names in their order (also those with no row yet), then any others found."""
    return list(dict.fromkeys(preferred)) + sorted(found - set(preferred))


def _build(run_dir: Path, run: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> ReportData:
    config = run.get("config") or {}
    baselines_cfg = [str(b) for b in (config.get("baselines") or [])]
    images = {str(r["image"]): r for r in rows["images"]}
    scored_methods = {str(r["method"]) for r in rows["scores"]}
    explained = {str(r["method"]) for r in rows["attributions"]}
    baseline_set = (set(baselines_cfg) | set(BASELINES)) & (scored_methods | explained | set(baselines_cfg))
    methods = _ordered([str(m) for m in config.get("methods") or [] if m not in baseline_set],
                       (explained | scored_methods) - baseline_set)
    baselines = [b for b in BASELINES if b in baseline_set] + sorted(baseline_set - set(BASELINES))
    metrics = _ordered([str(m) for m in config.get("metrics") or []], {str(r["metric"]) for r in rows["scores"]})

    scores: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows["scores"]:
        scores.setdefault((str(r["method"]), str(r["metric"])), {})[str(r["image"])] = _float(r["value"])
    stats = {key: Stat.of(list(per.values())) for key, per in scores.items()}
    higher = {m: _direction(m) for m in metrics}

    attributions, seconds, findings = {}, {}, []
    warned: dict[str, set[str]] = {}
    for r in rows["attributions"]:
        image, method = str(r["image"]), str(r["method"])
        attributions[(image, method)] = {"path": r.get("path"), "target": _json(r.get("target"), {})}
        if r.get("seconds") is not None:
            seconds.setdefault(image, {})[method] = float(r["seconds"])
        for f in _json(r.get("health"), []) or []:
            if not isinstance(f, dict):
                continue
            status = str(f.get("status", ""))
            if status in ("warn", "fail"):
                findings.append(Finding(image, method, str(f.get("check", f.get("name", "?"))), status,
                                        str(f.get("message", f.get("detail", "")))))
                warned.setdefault(method, set()).add(image)

    examples, ranked_by = {}, {}
    for method in methods + baselines:
        metric = next((m for m in metrics if stats.get((method, m), Stat.of([])).n), None)
        if metric is None:
            done = sorted(img for (img, m) in attributions if m == method)
            if method in methods and done:
                examples[method] = {"first": [Example(i, None, attributions[(i, method)]["target"])
                                              for i in done[:EXAMPLES_PER_GROUP * 3]]}
            continue
        if method in baselines:
            continue  # baselines are rows in the tables, not pictures worth a gallery
        ranked_by[method] = metric
        examples[method] = _examples(scores[(method, metric)], higher[metric],
                                     lambda i, m=method: attributions.get((i, m), {}).get("target", {}))

    status = str(run.get("status") or "running")
    total = run.get("images")
    return ReportData(
        run_dir=run_dir, run=run, status=status, images_total=int(total) if isinstance(total, int) else None,
        images=images, methods=methods, baselines=baselines, metrics=metrics, higher_is_better=higher,
        stats=stats, scores=scores, curves=_curves(rows["curves"]), examples=examples, ranked_by=ranked_by,
        findings=sorted(findings, key=lambda f: (f.status != "fail", f.image, f.method, f.check)),
        warned_images={m: len(v) for m, v in warned.items()}, seconds=seconds, attributions=attributions,
        batches=len(rows["batches"]),
        failures=sorted(({"image": str(r.get("image")), "error": str(r.get("error") or "")} for r in rows["failures"]),
                        key=lambda r: r["image"]))


def _examples(values: dict[str, float], higher: bool, target_of) -> dict[str, list[Example]]:
    """The best, median and worst images by one metric (NaN values are left out; ties by name)."""
    finite = sorted(((v, i) for i, v in values.items() if math.isfinite(v)),
                    key=lambda p: (-p[0] if higher else p[0], p[1]))
    k = EXAMPLES_PER_GROUP
    if len(finite) <= 3 * k:  # too few to split: show them all, in order, once
        return {"ranked": [Example(i, v, target_of(i)) for v, i in finite]}
    mid = len(finite) // 2 - k // 2
    pick = {"best": finite[:k], "median": finite[mid:mid + k], "worst": finite[-k:][::-1]}
    return {group: [Example(i, v, target_of(i)) for v, i in items] for group, items in pick.items()}


def _curves(rows: list[dict[str, Any]]) -> dict[str, dict[str, Band]]:
    """Mean curve and interquartile band per (metric, method), every image's curve on one fraction grid."""
    grid = np.linspace(0.0, 1.0, CURVE_POINTS)
    per: dict[tuple[str, str], list[np.ndarray]] = {}
    for r in rows:
        fractions = np.asarray(_json(r.get("fractions"), []), dtype=np.float64)
        values = np.asarray(_json(r.get("values"), []), dtype=np.float64)
        n = min(len(fractions), len(values))
        if n < 2 or not np.isfinite(values[:n]).all():
            continue
        order = np.argsort(fractions[:n], kind="stable")
        f, v = fractions[:n][order], values[:n][order]
        if f[-1] > 1.0 + 1e-9:  # fractions given as counts of steps: rescale to [0, 1]
            f = f / f[-1]
        per.setdefault((str(r["metric"]), str(r["method"])), []).append(np.interp(grid, f, v))
    out: dict[str, dict[str, Band]] = {}
    for (metric, method), curves in sorted(per.items()):
        stack = np.stack(curves)
        low, high = np.percentile(stack, [25, 75], axis=0)
        out.setdefault(metric, {})[method] = Band(grid, stack.mean(0), low, high, len(curves))
    return out
