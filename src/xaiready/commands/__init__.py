"""CLI subcommands; each imports frameworks only inside ``run``."""
