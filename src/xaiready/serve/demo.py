"""``xaiready serve --demo``: the server starts with example models registered and checked.

Team ``demo`` gets the zoo's healthy and broken models as state dicts (with their architecture, so they
load without trust), a traced TorchScript model (trusted by the demo admin, and recorded as such) and a
pickle that would run a command (refused as untrusted). A check job is queued for each; an admin token
is printed so the pages and the API can be opened at once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .config import ServeSettings

TEAM = "demo"
ZOO = ("HealthyCNN", "SegmentationNet", "DetachBetweenBlocks", "NumpyRoundTrip", "LyingBackward")


class _Command:
    """Pickles as a call to os.system; never unpickled here (the server refuses it)."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this pickle ran a command",))


def _files(folder: Path) -> list[tuple[str, Path, str | None, bool]]:
    """(name, file, arch, trusted) of each demo model."""
    import warnings

    import torch

    from ..testing import zoo

    out = []
    for name in ZOO:
        path = folder / f"{name}.pt"
        torch.save(zoo.build(name).state_dict(), path)
        out.append((name, path, f"xaiready.testing.zoo:{name}", False))
    traced = folder / "HealthyCNN-traced.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(zoo.build("HealthyCNN"), torch.from_numpy(zoo.example_input())), traced)
    out.append(("HealthyCNN-torchscript", traced, None, True))
    hostile = folder / "downloaded-checkpoint.pt"
    torch.save({"state": _Command()}, hostile)
    out.append(("downloaded-checkpoint", hostile, None, False))
    return out


def seed(settings: ServeSettings) -> str:
    """Register the demo models (once per database) and return a new admin token of team ``demo``."""
    from sqlalchemy import select

    from .auth import create_token, resolve
    from .db import make_engine, sessions, transaction, upgrade
    from .service import register_model, set_trust, submit_job
    from .tables import Model, Team

    settings.data.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url, pool_size=2)
    try:
        upgrade(engine)
        factory = sessions(engine)
        with transaction(factory) as s:
            token = create_token(s, TEAM, admin=True)
        with factory() as s:
            who = resolve(s, f"Bearer {token}")
            team = s.scalar(select(Team).where(Team.name == TEAM))
            already = s.scalar(select(Model.id).where(Model.team_id == team.id).limit(1))
        if already is None:
            with tempfile.TemporaryDirectory() as tmp:
                for name, path, arch, trusted in _files(Path(tmp)):
                    with open(path, "rb") as fh:
                        model = register_model(factory, settings, who, fh, path.name, name, arch)
                    if trusted:
                        set_trust(factory, who, model["id"], True)
                    submit_job(factory, settings, who, model["id"], "check", {"input_shape": "1,3,32,32"})
        return token
    finally:
        engine.dispose()
