"""Small reference models for demos, tests and users' own CI (needs the torch extra)."""
