"""CheckResult and Report: structured findings and the verdict of DESIGN 3.2."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .._jsonable import json_default

STATUSES = ("pass", "warn", "fail", "skip")
VERDICTS = ("full", "gradient-only", "inference-only")
SCHEMA_VERSION = 1


@dataclass
class CheckResult:
    name: str
    status: str  # pass | warn | fail | skip
    detail: str = ""

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, not {self.status!r}")


@dataclass
class Report:
    model: dict[str, Any]
    checks: list[CheckResult] = field(default_factory=list)
    gradient: dict[str, Any] = field(default_factory=lambda: {"status": "missing", "input_grad_norm": None,
                                                               "break": None})
    cam: dict[str, Any] = field(default_factory=lambda: {"status": "unavailable", "layers": [],
                                                          "default_layer": None, "reason": "not measured"})
    error: dict[str, str] | None = None
    context: dict[str, Any] = field(default_factory=dict)  # task, target, shapes, notes

    def add(self, name: str, status: str, detail: str = "") -> CheckResult:
        result = CheckResult(name, status, detail)
        self.checks.append(result)
        return result

    @property
    def verdict(self) -> str | None:
        if self.error is not None:
            return None
        if self.gradient["status"] != "ok":
            return "inference-only"
        return "full" if self.cam["status"] == "ok" else "gradient-only"

    def meets(self, required: str | None) -> bool:
        """Does the verdict reach ``required`` (full > gradient-only > inference-only)?"""
        if required is None:
            return True
        if self.verdict is None:
            return False
        rank = {"inference-only": 0, "gradient-only": 1, "full": 2}
        return rank[self.verdict] >= rank[required]

    def to_dict(self) -> dict[str, Any]:
        out = {"schema_version": SCHEMA_VERSION, "model": self.model}
        if self.error is None:
            out["verdict"] = self.verdict
        out.update({"error": self.error, "gradient": self.gradient, "cam": self.cam,
                    "checks": [asdict(c) for c in self.checks], **self.context})
        return out

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), indent=2, default=json_default, **kw)
