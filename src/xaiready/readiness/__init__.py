"""Readiness: measure what a loaded model can do for explanations, on the user's own input."""
