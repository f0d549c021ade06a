"""``auditmi encoders --all`` lists every backend with an example spec that parses."""

from __future__ import annotations

from typer.testing import CliRunner

from auditmi.cli.main import _register, app
from auditmi.encoders import BACKEND_EXAMPLES, parse_spec


def test_encoders_all_lists_every_backend_with_an_example() -> None:
    _register()
    res = CliRunner().invoke(app, ["encoders", "--all"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    for backend in ("open_clip", "timm", "hf", "http", "export", "local", "torchscript"):
        example, _, extra = BACKEND_EXAMPLES[backend]
        assert example in res.output and extra in res.output, backend
    assert "open_clip:ViT-B-32@openai" in res.output  # the open_clip tags follow


def test_backend_examples_name_their_backend() -> None:
    # Examples that are not files or folders on this machine must still parse to their backend.
    for backend in ("open_clip", "timm", "hf", "http"):
        assert parse_spec(BACKEND_EXAMPLES[backend][0])[0] == backend
