"""``RUN_DIR/results.sqlite`` and the files beside it, written one batch per transaction.

A batch's files (attribution maps, overlays) are written first, then all of its rows, its ``batches`` row included, in one transaction. A run killed at any
point leaves whole batches or nothing of a batch in the store; the maps of a batch in flight may lie
on disk without rows, and are written again when the batch is redone.

Beyond DESIGN 3.4's tables, ``failures`` holds the images that could not be read (one line each).
"""

from __future__ import annotations

import io
import json
import math
import sqlite3
import time
from pathlib import Path

import numpy as np

from ..errors import CorruptError

SCHEMA = """
CREATE TABLE IF NOT EXISTS images(image TEXT PRIMARY KEY, path TEXT, label INTEGER NULL, predicted INTEGER,
                                  height INTEGER, width INTEGER, batch INTEGER);
CREATE TABLE IF NOT EXISTS attributions(image TEXT, method TEXT, path TEXT, target TEXT, health TEXT,
                                        seconds REAL, PRIMARY KEY(image, method));
CREATE TABLE IF NOT EXISTS scores(image TEXT, method TEXT, metric TEXT, value REAL,
                                  PRIMARY KEY(image, method, metric));
CREATE TABLE IF NOT EXISTS curves(image TEXT, method TEXT, metric TEXT, fractions TEXT, "values" TEXT,
                                  PRIMARY KEY(image, method, metric));
CREATE TABLE IF NOT EXISTS batches(batch INTEGER PRIMARY KEY, images INTEGER, committed_at TEXT);
CREATE TABLE IF NOT EXISTS failures(image TEXT PRIMARY KEY, path TEXT, error TEXT, batch INTEGER);
"""


def file_stem(image: str, method: str) -> str:
    """``IMAGE__METHOD`` with the image id's ``/`` as ``__`` (DESIGN 3.4's file names)."""
    return f"{image.replace('/', '__')}__{method}"


class Store:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        for sub in ("attributions", "overlays"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "results.sqlite"
        try:
            # one writer at a time, but possibly not the thread that opened it (engine_local's writer)
            self.con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # WAL: a commit is one append, and a kill -9 can never leave half a transaction visible
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            self.con.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CorruptError(f"the results store cannot be opened: {exc}", path=str(self.path)) from exc

    def done_batches(self) -> set[int]:
        return {r[0] for r in self.con.execute("SELECT batch FROM batches")}

    def write(self, result) -> None:
        """Files, then every row of one ``pipeline.BatchResult`` and its ``batches`` row, in one transaction."""
        rows = []
        for a in result.attributions:
            stem = file_stem(a.image, a.method)
            rel = f"attributions/{stem}.npy"
            buf = io.BytesIO()
            np.save(buf, np.asarray(a.values, dtype=np.float32))
            _write_file(self.run_dir / rel, buf.getvalue())
            if a.overlay is not None:
                _write_file(self.run_dir / "overlays" / f"{stem}.png", a.overlay)
            rows.append((a.image, a.method, rel, json.dumps(a.target), json.dumps(a.health), a.seconds))
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany("INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [(*r, result.batch) for r in result.images])
            con.executemany("INSERT INTO failures VALUES (?, ?, ?, ?)", [(*r, result.batch) for r in result.failures])
            con.executemany("INSERT INTO attributions VALUES (?, ?, ?, ?, ?, ?)", rows)
            con.executemany("INSERT INTO scores VALUES (?, ?, ?, ?)",
                            [(i, m, k, _real(v)) for i, m, k, v in result.scores])
            con.executemany('INSERT INTO curves VALUES (?, ?, ?, ?, ?)',
                            [(i, m, k, json.dumps(f), json.dumps([_real(v) for v in vs]))
                             for i, m, k, f, vs in result.curves])
            con.execute("INSERT INTO batches VALUES (?, ?, ?)",
                        (result.batch, len(result.images) + len(result.failures),
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def summary(self) -> dict[str, dict[str, dict[str, float | int | None]]]:
        """``{method: {metric: {mean, std, n}}}`` over the finite values in the store (population std)."""
        out: dict[str, dict[str, dict]] = {}
        query = ("SELECT method, metric, COUNT(value), AVG(value), AVG(value * value) FROM scores "
                 "WHERE value IS NOT NULL GROUP BY method, metric")
        for method, metric, n, mean, sq in self.con.execute(query):
            std = math.sqrt(max(0.0, sq - mean * mean)) if n else None
            out.setdefault(method, {})[metric] = {"mean": _rounded(mean), "std": _rounded(std), "n": n}
        return out

    def counts(self) -> dict[str, int]:
        return {t: self.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608 (fixed names)
                for t in ("images", "failures", "batches")}

    def failures(self) -> list[tuple[str, str]]:
        return list(self.con.execute("SELECT image, error FROM failures ORDER BY image"))

    def close(self, *, compact: bool = False) -> None:
        """``compact``: fold the write-ahead log into the file, so a finished run is one self-contained file."""
        if compact:
            self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.con.execute("PRAGMA journal_mode=DELETE")
        self.con.close()


def _real(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None  # SQLite has no NaN: undefined values are NULL


def _rounded(v):
    return None if v is None else float(v)


def _write_file(path: Path, data: bytes) -> None:
    # no temporary name needed: a file is only read through a committed row, and a committed
    # batch's files are never written again (a file cut short by a crash belongs to a batch in
    # flight, whose redo writes it again)
    with open(path, "wb") as fh:
        fh.write(data)
