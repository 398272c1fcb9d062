"""The platform behind ``xaiready serve``: a model registry, a job queue run by worker processes, and a
REST API (DESIGN 3.5).

    app.py       the FastAPI application: lifespan (migrations, workers), error handlers, routers
    api.py       the ``/api`` routes; kserve.py the KServe V1 ``:explain`` route
    service.py   what the routes (and server-rendered pages) call: registry, jobs, trust
    auth.py      teams and bearer tokens (only hashes are stored)
    storage.py   uploads to disk: size limit, sha256, safe unzip, content sniffing
    tables.py    the SQLAlchemy tables; db.py engines and Alembic migrations
    queue.py     claim, lease, progress and finish of jobs in the database
    worker.py    worker processes: one child process per job, under time and memory limits
    tasks.py     what each job kind does, inside that child (check, explain, evaluate, run)

Nothing here is imported by ``xaiready`` itself: FastAPI and SQLAlchemy come with ``xaiready[serve]``.
"""
