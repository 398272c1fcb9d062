"""``xaiready token create``: the token is printed once and only its hash reaches the database."""

from __future__ import annotations

import hashlib
import sqlite3

from xaiready.cli import main

from .servers import create_token


def test_only_the_hash_of_a_token_is_stored(tmp_path):
    token = create_token(tmp_path, "vision", admin=True)
    assert token.startswith("xr_") and len(token) > 40
    dump = "\n".join(sqlite3.connect(tmp_path / "xaiready.db").iterdump())
    assert token not in dump and token[3:] not in dump
    assert hashlib.sha256(token.encode()).hexdigest() in dump
    assert create_token(tmp_path, "vision") != token  # a new token each time, for the same team


def test_a_bad_database_url_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["token", "create", "--team", "t", "--db", "mysql://x/y", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unsupported database URL 'mysql://...'") and "\n" not in err
