"""Explanation methods, written once against ModelHandle (never against a framework)."""
