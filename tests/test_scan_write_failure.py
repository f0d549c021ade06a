"""Issue 14 item 8 (second half): when a report cannot be written at the end, the summary is still printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditmi.errors import InputError

from e2e_support import (  # noqa: F401  (``calibrated`` is a fixture)
    Calibrated,
    calibrated,
    invoke_in_process,
    make_noise_images,
)


@pytest.mark.parametrize("which", ["html", "json"])
def test_a_write_that_fails_at_the_end_still_prints_the_summary(which: str, calibrated: Calibrated, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import auditmi.report as report

    def fail(*_: object, **__: object) -> None:
        raise InputError("cannot write the report: the disk went away")

    monkeypatch.setattr(report, f"write_{which}", fail)
    images = make_noise_images(tmp_path / "s", 6, seed=5)[0].parent
    proc = invoke_in_process("scan", images, "-e", calibrated.encoder, "-c", calibrated.bundle, "--device", "cpu", "--quiet",
                             "--no-cache", f"--{which}", tmp_path / f"r.{which}")
    assert proc.returncode == 2, proc.stderr
    assert "auditmi verdict" in proc.stdout and "images scored" in proc.stdout  # the summary was not lost
    assert "the disk went away" in proc.stderr
