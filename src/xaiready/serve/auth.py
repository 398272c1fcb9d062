"""Teams and bearer tokens. A token is shown once, when created; the database keeps only its sha256."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from .errors import AuthError
from .tables import Team, Token

PREFIX = "xr_"  # makes a leaked token easy to recognise (and to scan for) in logs and repositories


@dataclass(frozen=True)
class Principal:
    """Who is calling: a team, and whether the token is one of its admins."""

    team_id: int
    team: str
    token_id: int
    admin: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session, team: str, *, admin: bool = False) -> str:
    """A new token for ``team`` (created if new); returns the token, which is not stored."""
    team = team.strip()
    if not team:
        from ..errors import UsageError

        raise UsageError("the team name is empty", hint="pass --team NAME")
    row = session.scalar(select(Team).where(Team.name == team))
    if row is None:
        row = Team(name=team)
        session.add(row)
        session.flush()
    token = PREFIX + secrets.token_urlsafe(32)
    session.add(Token(team_id=row.id, sha256=token_hash(token), admin=admin))
    return token


def resolve(session, authorization: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer TOKEN`` header; AuthError (401) otherwise."""
    if not authorization:
        raise AuthError("this route needs a token", hint="send Authorization: Bearer TOKEN "
                        "(create one with xaiready token create --team NAME)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header is not 'Bearer TOKEN'")
    found = session.execute(select(Token, Team).join(Team, Team.id == Token.team_id)
                            .where(Token.sha256 == token_hash(token.strip()))).first()
    if found is None:
        raise AuthError("the token is not valid", hint="create one with xaiready token create --team NAME")
    tok, team = found
    return Principal(team_id=team.id, team=team.name, token_id=tok.id, admin=bool(tok.admin))
