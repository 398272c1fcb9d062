"""``python -m xaiready``: the same CLI as the ``xaiready`` command."""

from .cli import main

raise SystemExit(main())
