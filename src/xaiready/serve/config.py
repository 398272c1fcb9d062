"""The server's settings: where its data lives, how many workers, and the limits of each job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1024 ** 2


@dataclass(frozen=True)
class ServeSettings:
    data: Path = Path("xaiready-data")
    db: str | None = None              # default: sqlite:///DATA/xaiready.db
    workers: int = 1                   # local worker processes; 0 queues jobs without running them
    engine: str = "local"              # local | ray
    ray_address: str | None = None
    max_upload_bytes: int = 1024 * MiB  # one upload (model, zip or images)
    job_timeout_s: float = 600.0       # wall clock, enforced by the worker that started the job
    job_memory_mb: int = 8192          # address space a job may add, enforced with setrlimit in its process
    poll_s: float = 0.2                # how often an idle worker looks for a queued job

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{(Path(self.data) / 'xaiready.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return Path(self.data) / "models"

    @property
    def jobs_dir(self) -> Path:
        return Path(self.data) / "jobs"

    @property
    def uploads_dir(self) -> Path:
        return Path(self.data) / "uploads"
