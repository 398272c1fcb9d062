"""Rendering: console tables, JSON, heatmap images."""
