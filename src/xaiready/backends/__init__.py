"""One module per framework; each implements the small protocol in ``base``."""
