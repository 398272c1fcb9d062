"""Who is looking at a page: the bearer token kept in an HttpOnly cookie, and errors shown as pages.

The login form takes a token made with ``xaiready token create`` and stores it in a cookie that page
scripts cannot read (HttpOnly) and that other sites cannot send (SameSite=Strict, which is also what
keeps the pages' forms safe from cross-site posts). Every page resolves the cookie exactly as the API
resolves an ``Authorization`` header, so a team sees the same models and jobs in both.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from ..errors import XaiReadyError
from .auth import Principal, resolve
from .errors import AuthError, status_of

COOKIE = "xaiready_token"
COOKIE_MAX_AGE_S = 7 * 24 * 3600


class LoginNeeded(Exception):
    """The page needs a signed-in team; ``reason`` is shown on the login form."""

    def __init__(self, reason: str | None = None, *, stale_cookie: bool = False):
        super().__init__(reason or "")
        self.reason, self.stale_cookie = reason, stale_cookie


def page_principal(request: Request) -> Principal:
    """The caller of a page, from its cookie; LoginNeeded without a valid one."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise LoginNeeded()
    factory = request.app.state.factory
    try:
        with factory() as s:
            who = resolve(s, f"Bearer {token}")
    except AuthError:
        raise LoginNeeded("that token is no longer valid; sign in again", stale_cookie=True) from None
    request.state.principal = who
    return who


def check_token(request: Request, token: str) -> Principal:
    """The principal of a token typed into the login form; AuthError when it is not valid."""
    token = (token or "").strip()
    if not token:
        raise AuthError("paste a token", hint="create one with xaiready token create --team NAME")
    with request.app.state.factory() as s:
        return resolve(s, f"Bearer {token}")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never ``//host`` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/models"
    return target


def remember(response, token: str) -> None:
    response.set_cookie(COOKIE, token.strip(), max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                        path="/")


def forget(response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def login_redirect(request: Request, reason: LoginNeeded) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = "/login?next=" + quote(here, safe="/")
    if reason.reason:
        url += "&reason=" + quote(reason.reason)
    response = RedirectResponse(url, status_code=303)
    if reason.stale_cookie:
        forget(response)
    return response


def validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    msg = first.get("msg", "invalid request")
    return f"{where}: {msg}" if where else msg


def make_page_route(render_error):
    """An APIRoute class whose errors become pages: ``render_error(request, status, kind, message)``.

    The app's own handlers answer JSON (the API's contract); a person at a browser gets the same
    kinds and messages on a page with the navigation around it, and a login form when signed out.
    """

    class PageRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request):
                try:
                    return await handler(request)
                except LoginNeeded as exc:
                    return login_redirect(request, exc)
                except XaiReadyError as exc:
                    return render_error(request, status_of(exc.kind), exc.kind, exc.to_dict()["message"])
                except RequestValidationError as exc:
                    return render_error(request, 400, "usage", validation_message(exc))
                except HTTPException as exc:
                    return render_error(request, exc.status_code, "usage", str(exc.detail))

            return guarded

    return PageRoute
