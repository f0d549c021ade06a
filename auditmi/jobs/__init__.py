"""The three jobs behind the CLI, one module each: :mod:`~auditmi.jobs.scan`,
:mod:`~auditmi.jobs.calibrate` and :mod:`~auditmi.jobs.evaluate`.

Each job takes options, returns a typed result (a dataclass) and never prints;
:mod:`auditmi.report.build` turns results into JSON documents and :mod:`auditmi.cli` renders them.
Importing this package imports nothing heavy: the jobs (and torch) load on first use.
"""

from __future__ import annotations
