"""Teams, tokens, models, trust events, jobs, readiness reports.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table("teams", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(200), nullable=False, unique=True), _when("created_at"))
    op.create_table("tokens", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False, index=True),
                    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
                    sa.Column("admin", sa.Boolean, nullable=False), _when("created_at"))
    op.create_table("models", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False, index=True),
                    sa.Column("name", sa.String(200), nullable=False),
                    sa.Column("version", sa.Integer, nullable=False),
                    sa.Column("format", sa.String(40), nullable=False),
                    sa.Column("sha256", sa.String(64), nullable=False),
                    sa.Column("path", sa.Text, nullable=False), sa.Column("filename", sa.Text, nullable=False),
                    sa.Column("size", sa.BigInteger, nullable=False),
                    sa.Column("arch", sa.Text), sa.Column("arch_kwargs", sa.JSON),
                    sa.Column("trusted", sa.Boolean, nullable=False), _when("created_at"),
                    sa.UniqueConstraint("team_id", "name", "version"))
    op.create_table("trust_events", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False, index=True),
                    sa.Column("token_id", sa.Integer, sa.ForeignKey("tokens.id"), nullable=False),
                    sa.Column("trusted", sa.Boolean, nullable=False), _when("created_at"))
    op.create_table("jobs", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("team_id", sa.Integer, sa.ForeignKey("teams.id"), nullable=False, index=True),
                    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False, index=True),
                    sa.Column("kind", sa.String(20), nullable=False),
                    sa.Column("status", sa.String(20), nullable=False, index=True),
                    sa.Column("params", sa.JSON, nullable=False),
                    sa.Column("progress", sa.Float, nullable=False), sa.Column("message", sa.Text),
                    sa.Column("result", sa.JSON), sa.Column("error", sa.JSON),
                    sa.Column("worker", sa.String(200)), sa.Column("attempts", sa.Integer, nullable=False),
                    _when("lease_until", True), _when("created_at"), _when("started_at", True),
                    _when("finished_at", True))
    op.create_table("reports", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False, index=True),
                    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
                    sa.Column("verdict", sa.String(20)), sa.Column("error_kind", sa.String(40)),
                    sa.Column("report", sa.JSON, nullable=False),
                    _when("created_at"))


def downgrade() -> None:
    for name in ("reports", "jobs", "trust_events", "models", "tokens", "teams"):
        op.drop_table(name)
