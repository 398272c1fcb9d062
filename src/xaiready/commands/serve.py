"""``xaiready serve``: the platform (registry, jobs, REST API) on http://127.0.0.1:8000 by default."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_store_arguments(p)
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local worker processes running jobs (default 1; 0 only queues them)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="run jobs in local worker processes, or as Ray tasks on an existing cluster")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster address for --engine ray (default: auto)")
    p.add_argument("--demo", action="store_true",
                   help="register example models (healthy, broken, TorchScript, a hostile pickle) for team "
                        "'demo', check them, and print an admin token")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=1024, metavar="MB", help="one upload (default 1024)")
    g.add_argument("--job-timeout", type=float, default=600, metavar="S",
                   help="wall-clock seconds a job may run (default 600)")
    g.add_argument("--job-memory-mb", type=int, default=8192, metavar="MB",
                   help="memory a job may allocate, enforced with setrlimit (default 8192; 0: no limit, "
                        "for jobs on a GPU, whose driver reserves a large address space)")


def add_store_arguments(p):
    p.add_argument("--db", metavar="URL", help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
                                               "(default: sqlite at DATA/xaiready.db)")
    p.add_argument("--data", default="xaiready-data", metavar="DIR",
                   help="folder for models, job files and the default database (default ./xaiready-data)")


def settings_from(args):
    import importlib.util
    from pathlib import Path

    from ..errors import UnsupportedError

    for name in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "multipart"):
        if importlib.util.find_spec(name) is None:
            raise UnsupportedError(f"the platform needs the Python package '{name}', which is not installed",
                                   hint="pip install 'xaiready[serve]'")
    from ..serve.config import MiB, ServeSettings

    return ServeSettings(data=Path(args.data).resolve(), db=args.db, workers=getattr(args, "workers", 0),
                         engine=getattr(args, "engine", "local"), ray_address=getattr(args, "ray_address", None),
                         max_upload_bytes=int(getattr(args, "max_upload_mb", 1024) * MiB),
                         job_timeout_s=getattr(args, "job_timeout", 600.0),
                         job_memory_mb=getattr(args, "job_memory_mb", 8192))


def run(args) -> int:
    from ..errors import UsageError

    if args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    if args.engine == "ray" and args.db is None:
        raise UsageError("--engine ray needs a database every node can reach",
                         hint="pass --db postgresql://... (and a --data folder shared by the nodes)")
    settings = settings_from(args)
    if args.engine == "ray":  # before the server starts: an unreachable cluster is one line, not a traceback
        from ..serve.ray_engine import connect

        connect(args.ray_address)
    import uvicorn

    from ..serve.app import create_app

    print(f"xaiready serve: http://{args.host}:{args.port}  (API docs at /docs; data in {settings.data}; "
          f"{args.workers if args.engine == 'local' else 'ray'} workers)", flush=True)
    if args.demo:
        from ..serve.demo import seed

        token = seed(settings)
        print(f"demo models registered for team 'demo'; admin token (shown once): {token}\n"
              f"  curl -H 'Authorization: Bearer {token}' http://{args.host}:{args.port}/api/models", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0
