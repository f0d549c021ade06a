"""Scan reports: schema validation, strict JSON output, and the self-contained HTML page."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditmi import report as R
from auditmi.errors import InputError

EVIL_NAME = "evil<script>alert(1)</script>.png"


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> str:
    Image.new("RGB", size, colour).save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sample(tmp_path: Path) -> dict:
    """A realistic report as the scan code builds it (3 scored images, 1 skipped, 1 duplicate)."""
    suspects = tmp_path / "suspects"
    suspects.mkdir()
    images = []
    rows = [
        ("cat.png", (200, 30, 30), 0.91, 0.97, 0.004, True),
        ("dog.png", (30, 200, 30), 0.74, 0.81, 0.03, True),
        ("tree.png", (30, 30, 200), 0.12, 0.22, 0.61, False),
    ]
    for name, colour, score, prob, p, bh in rows:
        digest = _png(suspects / name, colour)
        images.append(
            {
                "path": str(suspects / name),
                "sha256": digest,
                "score": score,
                "member_probability": prob,
                "decision": "member" if score >= 0.5 else "non-member",
                "p_value": p,
                "bh_flag": bh,
            }
        )
    rng = np.random.default_rng(0)
    return {
        "schema_version": "1.0",
        "kind": "auditmi.scan-report",
        "auditmi_version": "0.1.0",
        "created": "2025-01-31T12:00:00+00:00",
        "command": f"auditmi scan {suspects} --encoder open_clip:ViT-B-32/openai --reference ref/",
        "verdict": {
            "label": "likely-used",
            "reason": "suspects score higher than the reference",
            "test": "rank-test",
            "p_value": 0.0012,
            "alpha": 0.05,
        },
        "aggregate": {
            "n_images": 5,
            "n_scored": 3,
            "n_skipped": 1,
            "n_duplicates": 1,
            "n_flagged": 2,
            "fraction_flagged": 2 / 3,
            "mean_score": 0.59,
            "decision_threshold": 0.5,
            "threshold_kind": "fpr=0.01",
            "expected_fpr": 0.01,
            "used_fraction": {
                "estimate": 0.7,
                "ci_low": 0.2,
                "ci_high": 1.0,
                "note": "Rogan-Gladen",
            },
            "rank_test": {
                "p_value": 0.0012,
                "auc": 0.93,
                "auc_ci": [0.81, 1.0],
                "n_suspects": 3,
                "n_reference": 50,
                "method": "exact",
                "u_statistic": 139.5,
            },
            "binomial_test": {
                "p_value": 0.0003,
                "n_flagged": 2,
                "n_total": 3,
                "expected_fpr": 0.01,
                "note": "relies on the calibrated FPR transferring",
            },
            "power": {
                "n_suspects_needed": 12,
                "auc": 0.8,
                "alpha": 0.05,
                "power": 0.8,
                "note": "normal approximation",
            },
            "shift_check": {
                "distinguishable": False,
                "auc": 0.52,
                "p_value": 0.7,
                "reason": "content of both sets is similar",
            },
            "n_bh_flagged": 2,
            "fdr": 0.1,
        },
        "images": images,
        "reference": {
            "paths_root": [str(tmp_path / "ref")],
            "n_images": 50,
            "n_skipped": 0,
            "scores": [float(v) for v in rng.normal(0.3, 0.1, 50)],
        },
        "skipped": [
            {
                "path": str(suspects / EVIL_NAME),
                "reason": "truncated or corrupt image data",
                "set": "suspect",
            }
        ],
        "duplicates": [[str(suspects / "cat.png"), str(suspects / "cat copy.png")]],
        "encoder": {
            "spec": "open_clip:ViT-B-32/openai",
            "backend": "open_clip",
            "identity": {"weights_sha256": "a" * 64},
            "source": "local",
            "input_size": 224,
        },
        "calibration": {
            "path": "calib/bundle",
            "bundle_sha256": "b" * 64,
            "attack": "V",
            "attack_name": "vector-based",
            "held_out_metrics": {"roc_auc": 0.9, "tpr_at_1pct_fpr": 0.3},
            "roc": {
                "fpr": [0.0, 0.001, 0.01, 0.1, 0.5, 1.0],
                "tpr": [0.0, 0.1, 0.3, 0.7, 0.95, 1.0],
            },
        },
        "config": {
            "views": {"n": 10},
            "features": {"kind": "sorted-sims"},
            "seed": 0,
            "batch_size": 32,
            "device": "cpu",
            "fpr": 0.01,
            "fdr": 0.1,
            "alpha": 0.05,
        },
        "environment": {"python": "3.11.9", "torch": "2.4.0", "platform": "Linux-x86_64"},
        "timing": {"total_s": 12.5},
    }


# --------------------------------------------------------------------------------------------
# Schema and validation
# --------------------------------------------------------------------------------------------


def test_packaged_schema_is_a_valid_draft_2020_12_schema():
    jsonschema = pytest.importorskip("jsonschema")
    s = R.schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$schema"].endswith("/draft/2020-12/schema")
    assert s["properties"]["schema_version"]["const"] == R.SCHEMA_VERSION


def test_validate_accepts_sample_and_its_json_round_trip(sample):
    R.validate_report(sample)
    R.validate_report(json.loads(R.to_json(sample)))
    # Optional parts may be null.
    minimal = copy.deepcopy(sample)
    minimal["reference"] = None
    minimal["calibration"]["roc"] = None
    for key in (
        "used_fraction",
        "rank_test",
        "binomial_test",
        "power",
        "shift_check",
        "n_bh_flagged",
        "fdr",
        "expected_fpr",
        "mean_score",
    ):
        minimal["aggregate"][key] = None
    minimal["verdict"].update(test="none", p_value=None, label="inconclusive")
    R.validate_report(minimal)


def _broken(sample, edit):
    bad = copy.deepcopy(sample)
    edit(bad)
    return bad


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda r: r.pop("verdict"), "verdict"),
        (lambda r: r["verdict"].update(label="maybe-used"), "verdict.label"),
        (lambda r: r["images"][1].update(sha256="xyz" * 21 + "q"), "images[1].sha256"),
        (lambda r: r["images"][0].update(member_probability=1.5), "images[0].member_probability"),
        (lambda r: r["calibration"].update(attack="Q"), "calibration.attack"),
        (lambda r: r["aggregate"].update(n_flagged=-1), "aggregate.n_flagged"),
        (lambda r: r["skipped"][0].update(set="elsewhere"), "skipped[0].set"),
        (lambda r: r["calibration"]["roc"]["tpr"].pop(), "calibration.roc"),
        (lambda r: r["verdict"].update(alpha=float("nan")), "verdict.alpha"),  # NaN -> null
    ],
)
def test_validate_rejects_broken_reports_naming_the_field(sample, edit, field):
    with pytest.raises(ValueError, match=re.escape(field)) as info:
        R.validate_report(_broken(sample, edit))
    assert isinstance(info.value, InputError)  # the CLI maps it to exit code 2


def test_validate_rejects_unknown_key_in_closed_object(sample):
    pytest.importorskip("jsonschema")
    with pytest.raises(ValueError, match="scroe"):
        R.validate_report(_broken(sample, lambda r: r["images"][0].update(scroe=1.0)))


def test_schema_verdict_enums_match_the_verdict_module():
    """The schema, the report and --fail-on all take their labels from auditmi.verdict."""
    from auditmi.cli.scan import FailOn
    from auditmi.verdict import Label, TestName

    props = R.schema()["properties"]["verdict"]["properties"]
    assert props["label"]["enum"] == [label.value for label in Label]
    assert props["test"]["enum"] == [t.value for t in TestName]
    assert list(R.VERDICT_LABELS) == [label.value for label in Label]
    assert {f.value for f in FailOn} == {Label.LIKELY_USED.value, Label.INCONCLUSIVE.value, "never"}


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def test_to_json_turns_nan_inf_and_numpy_into_strict_json(sample):
    sample["aggregate"]["mean_score"] = float("nan")
    sample["aggregate"]["n_flagged"] = np.int64(2)
    sample["images"][0]["score"] = np.float32(0.5)
    sample["reference"]["scores"] = np.array([0.1, np.inf, 0.3])
    text = R.to_json(sample)
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["aggregate"]["mean_score"] is None
    assert doc["aggregate"]["n_flagged"] == 2
    assert doc["reference"]["scores"] == [0.1, None, 0.3]
    assert list(doc) == list(sample)  # key order kept, not sorted
    assert text.startswith('{\n  "schema_version"')


def test_to_json_rejects_non_json_values_with_location(sample):
    sample["timing"]["clock"] = object()
    with pytest.raises(ValueError, match=re.escape("timing.clock")):
        R.to_json(sample)


def test_write_json_stdout_prints_exactly_one_document(sample, capsys):
    R.write_json(sample, "-")
    out = capsys.readouterr().out
    assert out.endswith("}\n") and not out.endswith("\n\n")
    doc, end = json.JSONDecoder().raw_decode(out)
    assert out[end:] == "\n"
    assert doc["verdict"]["label"] == "likely-used"


def test_write_json_file_is_atomic_and_valid(sample, tmp_path):
    dest = tmp_path / "out" / "report.json"
    with pytest.raises(InputError, match="does not exist"):
        R.write_json(sample, dest)
    dest.parent.mkdir()
    dest.write_text("old")
    R.write_json(sample, dest)
    assert json.loads(dest.read_text(encoding="utf-8"))["kind"] == "auditmi.scan-report"
    assert [p.name for p in dest.parent.iterdir()] == ["report.json"]  # no temp file left


# --------------------------------------------------------------------------------------------
# Thumbnails and HTML
# --------------------------------------------------------------------------------------------


def test_thumbnail_data_uri(tmp_path):
    wide = tmp_path / "wide.png"
    _png(wide, (10, 20, 30), size=(800, 100))
    uri = R.thumbnail_data_uri(wide, size=64)
    assert uri is not None and uri.startswith("data:image/png;base64,")
    import base64
    import io

    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert max(im.size) <= 64 and im.size[0] > im.size[1]  # fits the box, keeps the aspect
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert R.thumbnail_data_uri(bad) is None
    assert R.thumbnail_data_uri(tmp_path / "missing.png") is None


def _no_network_refs(page: str) -> None:
    # Inline SVG in HTML needs no xmlns, so the page holds no URL of its own at all.
    assert "http://" not in page and "https://" not in page
    for attr in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page):
        assert attr.startswith("data:image/png;base64,"), attr
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "@import" not in page and "url(" not in page


def test_render_html_full_page(sample):
    page = R.render_html(sample)
    assert page.startswith("<!DOCTYPE html>")
    # Verdict first, then the histogram, then the ROC, then the table.
    i_verdict = page.index("verdict: likely-used")
    i_hist = page.index('aria-labelledby="hist-title"')
    i_roc = page.index('aria-labelledby="roc-title"')
    i_table = page.index('id="images"')
    assert i_verdict < i_hist < i_roc < i_table
    assert page.count("<svg") == 2
    assert "reference (known non-members)" in page and "suspect images" in page
    assert "decision threshold" in page and "false-positive rate (log scale)" in page
    assert page.count("data:image/png;base64,") == 3  # one thumbnail per scored image
    # The skipped file's name is shown, escaped, never as markup.
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;.png" in page
    assert "<script>" not in page
    _no_network_refs(page)
    # Ranked by score: cat (0.91) before dog (0.74) before tree (0.12).
    assert page.index(">cat.png<") < page.index(">dog.png<") < page.index(">tree.png<")
    assert "b" * 64 in page  # calibration bundle hash shown for reproduction


def test_render_html_from_a_saved_json_report_is_the_same_page(sample, tmp_path):
    """The page renders from the JSON document (docs/design.md): a report read back from its file
    gives the same page as the in-memory one."""
    import json

    from auditmi.report.jsondoc import to_json

    saved = json.loads(to_json(sample))
    assert R.render_html(saved, thumbnails=False) == R.render_html(sample, thumbnails=False)


def test_render_html_escapes_user_urls_and_markup_everywhere(sample):
    sample["images"][0]["path"] = 'x/"><img src=http://evil.example/a.png>.png'
    sample["command"] = "auditmi scan https://example.com/<b>bold</b>"
    page = R.render_html(sample, thumbnails=False)
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<img src=http" not in page
    stripped = page.replace("https://example.com/", "").replace("http://evil.example/", "")
    _no_network_refs(stripped)
    assert "data:image/png" not in page  # thumbnails=False


def test_render_html_without_reference_or_roc(sample, tmp_path):
    sample["reference"] = None
    sample["calibration"]["roc"] = None
    sample["aggregate"]["rank_test"] = None
    sample["aggregate"]["shift_check"] = None
    sample["aggregate"]["used_fraction"] = None
    sample["verdict"].update(label="inconclusive", test="none", p_value=None)
    R.validate_report(sample)
    page = R.render_html(sample, top_k=2)
    assert page.count("<svg") == 1  # histogram of suspects only
    assert "reference (known non-members)" not in page and "decision threshold" in page
    assert "No ROC curve is available" in page
    assert page.index("verdict: inconclusive") < page.index("<svg")
    assert page.count('<tr><td class="num">') == 2  # top_k rows
    _no_network_refs(page)
    dest = tmp_path / "report.html"
    R.write_html(sample, dest, top_k=2)
    assert dest.read_text(encoding="utf-8") == page


def test_render_html_handles_empty_scan_and_missing_files(sample):
    sample["images"][0]["path"] = "/nonexistent/gone.png"
    page = R.render_html(sample)
    assert page.count("data:image/png;base64,") == 2 and "n/a" in page
    sample["images"] = []
    sample["aggregate"].update(n_scored=0, mean_score=None)
    page = R.render_html(sample)
    assert "No image was scored" in page and "No images to show" in page
    with pytest.raises(InputError, match="top_k"):
        R.render_html(sample, top_k=-1)


def test_roc_uses_log_fpr_axis(sample):
    page = R.render_html(sample, thumbnails=False)
    roc = page[page.index('aria-labelledby="roc-title"') :]
    roc = roc[: roc.index("</svg>")]
    for tick in (">0.001<", ">0.01<", ">0.1<", ">1<"):
        assert tick in roc
    # Decades are equally spaced on a log axis.
    xs = [
        float(m)
        for m in re.findall(
            r'<text x="([0-9.]+)" y="[0-9.]+" text-anchor="middle" class="tick" '
            r'font-size="11">(?:0\.001|0\.01|0\.1|1)<',
            roc,
        )
    ]
    gaps = np.diff(xs)
    assert len(xs) == 4 and np.allclose(gaps, gaps[0], atol=0.2) and not math.isclose(gaps[0], 0)


def test_hostile_file_name_of_a_scored_image_is_escaped_everywhere(sample, tmp_path):
    """A real image called ``<script>alert(1)</script>.png``: shown (with its thumbnail) as text only."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    name = "<script>alert(1)</script>.png"  # on POSIX: a folder "<script>alert(1)<" holding "script>.png"
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    digest = _png(folder / name, (9, 9, 9))
    sample["images"][0].update(path=str(folder / name), sha256=digest)
    sample["duplicates"] = [[str(folder / name), str(folder / ('x" onload="alert(2).png'))]]
    page = R.render_html(sample)
    assert "<script" not in page.lower()
    assert 'onload="alert' not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;.png") >= 3  # path, title attribute, duplicates
    assert ">script&gt;.png<" in page and 'alt="script&gt;.png"' in page  # the file name, and the thumbnail's alt text
    assert page.count("data:image/png;base64,") == 3  # its thumbnail is still shown
    _no_network_refs(page)


def test_templates_autoescape_and_the_css_is_inlined_from_its_file(sample):
    from importlib import resources

    from auditmi.report import html

    env = html._environment()
    assert env.autoescape is True and env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    assert {"report.html.j2", "chart.svg.j2", "report.css"} <= set(env.list_templates())
    css = resources.files("auditmi").joinpath("report/templates/report.css").read_text(encoding="utf-8")
    page = R.render_html(sample, thumbnails=False)
    body = css.split("*/", 1)[1].strip()
    assert body and body in page  # inlined verbatim: the page stays self-contained


def test_schema_names_each_attack_variant_by_its_class() -> None:
    """The schema's description of calibration.attack matches the classifiers (it had T/V/S mixed up)."""
    from auditmi.attacks import ATTACKS

    words = {"ThresholdAttack": "threshold", "VectorAttack": "vector", "SetAttack": "set"}
    text = R.schema()["properties"]["calibration"]["properties"]["attack"]["description"]
    for kind, cls in ATTACKS.items():
        assert f"{kind} ({words[cls.__name__]})" in text, (kind, text)
