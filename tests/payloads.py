"""Hostile test payloads: objects whose unpickling runs a command that only creates a marker file."""

import os


class Payload:
    """Pickles as a call to os.system: loading it runs ``touch marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
