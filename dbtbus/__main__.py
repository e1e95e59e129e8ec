"""``python -m dbtbus``: the ``dbtbus`` command line (see ``dbtbus --help``)."""

from __future__ import annotations

from dbtbus.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
