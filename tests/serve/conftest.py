"""Fixtures of the platform's tests: one real server per test module and database, and model files.

``db`` is parametrised: SQLite always, PostgreSQL under ``-m services`` (``make test-services``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from .servers import Postgres, Server, create_token

pytest.importorskip("fastapi")


UPLOAD_MB = 4  # the module servers' upload limit: the test models are kilobytes


@pytest.fixture(scope="session")
def postgres():
    cluster = Postgres().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def db(request):
    """A database URL for one server: None (the default SQLite file) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").fresh_database()


class Abort:
    """Unpickling calls os.abort(): the process dies of SIGABRT."""

    def __reduce__(self):
        return (os.abort, ())


class Sleep:
    """Unpickling sleeps for a minute: a load that hangs."""

    def __reduce__(self):
        return (time.sleep, (60,))


class Hog:
    """Unpickling allocates 2 GiB at once (zero-filled: every page is touched)."""

    def __reduce__(self):
        return (bytearray, (2 * 1024 ** 3,))


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> dict[str, Path]:
    import torch

    from payloads import Payload
    from xaiready.testing import zoo

    root = tmp_path_factory.mktemp("models")
    files = {}
    for name in ("HealthyCNN", "DetachBetweenBlocks"):
        files[name] = root / f"{name}.pt"
        torch.save(zoo.build(name).state_dict(), files[name])
    files["marker"] = root / "pwned"
    files["hostile"] = root / "hostile.pt"
    torch.save({"weights": Payload(files["marker"])}, files["hostile"])
    for name, obj in (("abort", Abort()), ("sleep", Sleep()), ("hog", Hog())):
        files[name] = root / f"{name}.pt"
        torch.save(obj, files[name])
    from PIL import Image

    pixels = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")
    files["image"] = root / "cat.png"
    Image.fromarray(pixels).save(files["image"])
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory, db):
    data = tmp_path_factory.mktemp("serve")
    srv = Server(data, db=db, workers=1, extra=("--job-timeout", "120", "--max-upload-mb", str(UPLOAD_MB))).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tokens(server) -> dict[str, str]:
    """An admin and a member of team 'vision', and a member of team 'audio'."""
    return {"admin": create_token(server.data, "vision", admin=True, db=server.db),
            "member": create_token(server.data, "vision", db=server.db),
            "other": create_token(server.data, "audio", db=server.db)}
