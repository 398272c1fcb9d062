"""What the pages show, computed from service.py's dicts: verdict badges, report sections, the method
catalogue. Pure functions (no request, no database), so the templates stay free of logic."""

from __future__ import annotations

from datetime import datetime

PENDING = ("queued", "running")
VERDICTS = ("full", "gradient-only", "inference-only")
VERDICT_TEXT = {
    "full": "input gradients are correct and a CAM layer is established: every method runs",
    "gradient-only": "input gradients are correct, but no internal layer has a spatial layout: no CAM methods",
    "inference-only": "the forward pass works but the gradients do not: black-box methods only",
}


def badge(verdict: str | None, error_kind: str | None, check_job: dict | None) -> dict:
    """The model's badge: its latest verdict, a refusal, a failed or pending check, or none yet.

    ``check_job`` is the model's latest check job; while it is queued or running the badge says so
    (over an older verdict, which the page shows beside it)."""
    pending = check_job is not None and check_job["status"] in PENDING
    if pending and verdict is None and not error_kind:
        label = "checking" if check_job["status"] == "running" else "queued"
        return {"state": "pending", "label": label, "title": "the readiness check is " + check_job["status"],
                "job": check_job["id"]}
    if verdict in VERDICTS:
        return {"state": verdict, "label": verdict, "title": VERDICT_TEXT[verdict],
                "job": check_job["id"] if pending else None}
    if error_kind:
        return {"state": "refused", "label": f"refused: {error_kind}", "title": f"the model was refused at load ({error_kind})",
                "job": check_job["id"] if pending else None}
    if check_job is not None and check_job["status"] == "failed":
        kind = (check_job.get("error") or {}).get("kind") or "failed"
        return {"state": "failed", "label": f"check {kind}", "title": (check_job.get("error") or {}).get("message"),
                "job": None}
    return {"state": "none", "label": "not checked", "title": "no readiness check has run", "job": None}


def latest_check_jobs(jobs: list[dict]) -> dict[int, dict]:
    """model id -> its newest check job, from jobs listed newest first."""
    found: dict[int, dict] = {}
    for job in jobs:
        if job["kind"] == "check":
            found.setdefault(job["model_id"], job)
    return found


def when(value: str | None) -> str:
    """'2026-12-01 16:20 UTC' from an ISO time; '' for none."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def short_when(value: str | None) -> str:
    """'Dec 01 16:20' for tables (the full time is in the cell's title)."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%b %d %H:%M")
    except ValueError:
        return value


def duration(job: dict) -> str:
    start, end = job.get("started_at"), job.get("finished_at")
    if not start or not end:
        return ""
    seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
               - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def report_view(report: dict | None) -> dict | None:
    """The sections of the model page from one readiness report (DESIGN 3.2)."""
    if not report:
        return None
    cam = report.get("cam") or {}
    layouts = cam.get("layouts") or {}
    usable = set(cam.get("layers") or [])
    layers = [{"name": name, "kind": info.get("kind"), "grid": "x".join(str(g) for g in info.get("grid") or []),
               "evidence": info.get("evidence"), "usable": name in usable,
               "default": name == cam.get("default_layer")} for name, info in layouts.items()]
    layers += [{"name": name, "kind": None, "grid": "", "evidence": None, "usable": True,
                "default": name == cam.get("default_layer")} for name in cam.get("layers") or [] if name not in layouts]
    layers.sort(key=lambda row: (not row["default"], not row["usable"]))
    checks = report.get("checks") or []
    conversion = next((c for c in checks if c.get("name") == "conversion-equivalence"), None)
    model = report.get("model") or {}
    return {"verdict": report.get("verdict"), "error": report.get("error"), "model": model,
            "gradient": report.get("gradient") or {}, "cam": cam, "layers": layers, "checks": checks,
            "counts": {s: sum(1 for c in checks if c.get("status") == s) for s in ("pass", "warn", "fail", "skip")},
            "conversion": {"from": model.get("converted_from"), "check": conversion,
                           "notes": [n for n in report.get("notes") or [] if "conver" in n.lower()]},
            "notes": report.get("notes") or [], "task": report.get("task"), "target": report.get("target"),
            "input_shape": report.get("input_shape"), "output_shape": report.get("output_shape"),
            "seconds": report.get("seconds"), "job_id": report.get("job_id"), "checked_at": report.get("checked_at")}


def own_warnings(explanation: dict) -> list[str]:
    """The explanation's warnings less those that repeat a health finding (listed beside it already)."""
    repeated = tuple(f"{h.get('name')}:" for h in explanation.get("health") or [])
    return [w for w in explanation.get("warnings") or [] if not repeated or not str(w).startswith(repeated)]


def image_size(input_shape: list | None) -> str:
    """'H,W' of an image input shape (NCHW or NHWC with 1, 3 or 4 channels), for the resize fields."""
    if not input_shape or len(input_shape) != 4:
        return ""
    if input_shape[1] in (1, 3, 4):
        return f"{input_shape[2]},{input_shape[3]}"
    if input_shape[3] in (1, 3, 4):
        return f"{input_shape[1]},{input_shape[2]}"
    return ""


FAMILY_TEXT = {"cam": "CAM (a layer's activations and gradients)", "gradient": "Gradient (input gradients)",
               "black_box": "Black-box (forward passes only)"}


def method_catalogue(verdict: str | None) -> list[dict]:
    """The registered methods by family, each marked available or not under the model's verdict."""
    from ..methods import load_methods
    from ..methods.base import METHODS

    load_methods()
    needs = {"cam": ("full",), "gradient": ("full", "gradient-only"), "black_box": VERDICTS}
    defaults = {"full": {"gradcam", "saliency"}, "gradient-only": {"saliency"}, "inference-only": {"occlusion"}}
    chosen = defaults.get(verdict, {"gradcam"})
    groups = []
    for family in ("cam", "gradient", "black_box"):
        names = [n for n in METHODS.names() if METHODS.get(n).family == family]
        if not names:
            continue
        ok = verdict is None or verdict in needs[family]
        groups.append({"family": family, "title": FAMILY_TEXT[family], "available": ok,
                       "why": None if ok else f"not with the verdict {verdict}",
                       "methods": [{"name": n, "checked": ok and n in chosen} for n in names]})
    return groups


def metric_names() -> list[str]:
    from .. import metrics  # noqa: F401  (importing the package registers every metric)
    from ..metrics.base import METRICS

    return METRICS.names()
