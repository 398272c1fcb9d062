"""Alembic migrations of the platform's database; ``xaiready serve`` runs ``upgrade head`` at start."""
