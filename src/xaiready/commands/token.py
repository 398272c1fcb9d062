"""``xaiready token create --team NAME [--admin]``: print a new bearer token once; only its hash is stored."""

from __future__ import annotations


def add_arguments(p):
    from .serve import add_store_arguments

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    create = sub.add_parser("create", help="create a token for a team (the team is created if new)",
                            description="create a token for a team (the team is created if new)")
    create.add_argument("--team", required=True, metavar="NAME", help="the team the token acts for")
    create.add_argument("--admin", action="store_true", help="may set models' trust flag")
    add_store_arguments(create)


def run(args) -> int:
    from ..serve.auth import create_token
    from ..serve.db import make_engine, sessions, transaction, upgrade
    from .serve import settings_from

    settings = settings_from(args)
    settings.data.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url, pool_size=1)
    try:
        upgrade(engine)
        with transaction(sessions(engine)) as s:
            token = create_token(s, args.team, admin=args.admin)
    finally:
        engine.dispose()
    print(token)
    return 0
