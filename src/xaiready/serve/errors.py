"""Errors only the platform raises, and the HTTP status of every error kind.

The JSON body is always ``{"error": {"kind", "message"}}`` with the kinds of DESIGN 3.2, plus ``auth``,
``not-found`` and ``usage``.
"""

from __future__ import annotations

from ..errors import XaiReadyError


class AuthError(XaiReadyError):
    kind = "auth"


class ForbiddenError(XaiReadyError):
    """The token is valid but not allowed this action (a team member setting trust)."""

    kind = "forbidden"


class NotFoundError(XaiReadyError):
    """Also what another team's id answers, so that existence does not leak."""

    kind = "not-found"


STATUS = {
    "auth": 401, "forbidden": 403, "not-found": 404, "usage": 400, "too-large": 413,
    "corrupt": 422, "unsupported": 422, "arch-mismatch": 422, "missing-code": 422,
    "untrusted": 422, "unsafe-path": 422, "input": 422, "capability": 422,
}


def status_of(kind: str) -> int:
    return STATUS.get(kind, 500)


def body(kind: str, message: str) -> dict:
    return {"error": {"kind": kind, "message": message}}
