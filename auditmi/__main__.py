"""``python -m auditmi``: the same entry point as the ``auditmi`` console script."""

from __future__ import annotations

from auditmi.cli.main import run

if __name__ == "__main__":
    run()
