"""One error hierarchy for everything a user can get wrong or a model can refuse.

    XaiReadyError                  exit 1 unless a subclass says otherwise
    ├── UsageError                 exit 2  bad flags, unknown layer or method, bad target
    ├── LoadError                  exit 3  the model or input file is invalid
    │   ├── CorruptError               kind "corrupt": empty, truncated, unparsable
    │   ├── UnsupportedError           kind "unsupported": a format xaiready cannot load (here)
    │   ├── ArchMismatchError          kind "arch-mismatch": weights do not fit the architecture
    │   └── MissingCodeError           kind "missing-code": the file names code that is not importable
    ├── PolicyError                exit 4  refused by policy
    │   ├── UntrustedError             kind "untrusted": loading would run code from the file
    │   └── UnsafePathError            kind "unsafe-path": a path escapes the model's folder
    ├── ResourceError              exit 5  kind "too-large": over an explicit, configurable limit
    ├── InputError                 exit 6  kind "input": the model loaded but cannot run on the input
    ├── CapabilityError            exit 6  the model cannot give what a method needs
    └── RequirementError           exit 1  `check --require` not met

Every error carries ``path`` and ``format`` when known and a ``hint`` that says what to do,
so the CLI can print exactly one line.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of a library's error message (or its type name), for one-line errors."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit] if limit else line


class XaiReadyError(Exception):
    exit_code = 1
    kind = "error"

    def __init__(self, message: str, *, path: str | None = None, format: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.format = format
        self.hint = hint

    def one_line(self) -> str:
        """The single stderr line: file, detected format, reason, and what to do."""
        parts = []
        if self.path:
            parts.append(str(self.path))
        if self.format:
            parts.append(f"[{self.format}]")
        head = " ".join(parts)
        text = f"{head}: {self.message}" if head else self.message
        if self.hint:
            text += f" ({self.hint})"
        return "error: " + " ".join(text.split())

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.one_line().removeprefix("error: ")}


class UsageError(XaiReadyError):
    exit_code = 2
    kind = "usage"


class DetectionOutputError(UsageError):
    """The model returns detections (torchvision's list[dict], a DETR ModelOutput), which only a
    detection target can read: the default target of such a model is ``targets.Detection()``."""


class LoadError(XaiReadyError):
    exit_code = 3
    kind = "corrupt"


class CorruptError(LoadError):
    kind = "corrupt"


class UnsupportedError(LoadError):
    kind = "unsupported"


class ArchMismatchError(LoadError):
    kind = "arch-mismatch"


class MissingCodeError(LoadError):
    kind = "missing-code"


class PolicyError(XaiReadyError):
    exit_code = 4
    kind = "untrusted"


class UntrustedError(PolicyError):
    kind = "untrusted"


class UnsafePathError(PolicyError):
    kind = "unsafe-path"


class ResourceError(XaiReadyError):
    exit_code = 5
    kind = "too-large"


class DeviceMemoryError(ResourceError):
    """The device ran out of memory for one pass; chunked methods retry with fewer rows."""

    kind = "device-memory"


class InputError(XaiReadyError):
    exit_code = 6
    kind = "input"


class CapabilityError(XaiReadyError):
    exit_code = 6
    kind = "capability"


class RequirementError(XaiReadyError):
    exit_code = 1
    kind = "requirement"
