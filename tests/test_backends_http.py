"""The HTTP encoder backend against a real HTTP server on 127.0.0.1 (started by the tests).

The server serves the bundled Fashion-MNIST example encoder, so a scan over HTTP can be compared
with the same encoder scanned locally. The only difference between the two is that HTTP views
travel as 8-bit PNG: the client quantises each rendered view (values in [0, 1]) to 1/255 steps.
Hence two comparisons:

* against the local encoder with the same 8-bit quantisation applied to its views: equal up to
  float32 rounding (features and scores within 1e-4; PNG is lossless, nothing else differs);
* against the plain local encoder: within the effect of the quantisation, at most 1/510 per
  pixel (0.004 after the example's std of 0.5). Measured on these 16 images: scores differ by
  < 0.01 on a 0-1 scale; the test allows 0.03.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("httpx", reason="the http extra is not installed: pip install -e '.[dev,all]'")
pytest.importorskip("tenacity", reason="the http extra is not installed")

from auditmi.calibration import load_calibration
from auditmi.encoders import load_encoder, parse_spec
from auditmi.encoders.base import Encoder
from auditmi.encoders.http_config import identity, plan, read_config, request_count
from auditmi.errors import EncoderUnavailableError, InputError
from auditmi.pipeline import compute_features

from backends_support import EmbedService, write_config
from e2e_support import assert_user_error, example_subset, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fashion"
SECRET = "sk-test-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def local() -> Encoder:
    return load_encoder(str(EXAMPLE / "encoder"), "cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("http_images")
    for sub, n in (("suspect", 8), ("reference", 8)):
        (d / sub).mkdir()
        for p in sorted((EXAMPLE / sub).glob("*.png"))[:n]:
            shutil.copy(p, d / sub / p.name)
    return d / "suspect", d / "reference"


def _quantised(enc: Encoder) -> Encoder:
    """``enc`` seeing its views through 8-bit quantisation, as the HTTP client sends them."""
    m = torch.tensor(enc.mean).view(1, 3, 1, 1)
    s = torch.tensor(enc.std).view(1, 3, 1, 1)

    def fwd(x: torch.Tensor) -> torch.Tensor:
        q = ((x * s + m).clamp(0, 1) * 255).round() / 255
        return enc.forward((q - m) / s)

    return Encoder(spec="quantised", backend="local", forward=fwd, input_size=enc.input_size, mean=enc.mean, std=enc.std,
                   device=enc.device, identity=enc.identity + "+q8", source="test")


def _config(tmp: Path, url: str, **kw: object) -> Path:
    base = dict(model="fashion", input_size=32, timeout=1.0, max_batch=16, concurrency=2, retries=4, backoff=0.05,
                headers={"Authorization": "Bearer ${AUDITMI_TEST_KEY}"})
    base.update(kw)
    return write_config(tmp / "api.toml", url, **base)


def test_scan_over_http_survives_faults_and_matches_local(tmp_path: Path, local: Encoder, images: tuple[Path, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    suspect, reference = images
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUDITMI_TEST_KEY", SECRET)
    with EmbedService(local, token=SECRET) as svc:
        cfg = _config(tmp_path, svc.url)
        svc.faults = ["429", "503", "timeout"]
        out = tmp_path / "report.json"
        t0 = time.monotonic()
        proc = run_cli("scan", suspect, "--encoder", f"http:{cfg}", "--calibration", EXAMPLE / "calibration",
                       "--reference", reference, "--json", out, "--quiet", cache_dir=cache)
        assert proc.returncode == 0, proc.stderr
        statuses = svc.statuses()
        # The faults were met and survived (two requests in flight, so their order may vary).
        assert sorted(statuses[:3]) == [0, 429, 503] and set(statuses[3:]) == {200}, statuses
        # The plan printed before the scan is what was sent: 8 + 8 images x 10 views in one pass, requests of <= 16 views.
        expected = request_count(16, 10, 32, 16)
        assert f"16 images x 10 views = 160 views in at most {expected} requests" in " ".join(proc.stderr.split())
        assert len(statuses) - 3 == expected
        assert sum(n for _, _, n, _ in svc.log) == 160
        assert all(h.get("authorization") == f"Bearer {SECRET}" for *_, h in svc.log)
        # A rerun resumes from the scan's cache: every image comes from it, no request is sent.
        from auditmi.cache import FeatureCache
        from auditmi.pipeline import cache_key

        n_before = len(svc.log)
        cal = load_calibration(EXAMPLE / "calibration")
        enc = load_encoder(f"http:{cfg}")
        for folder in (suspect, reference):
            again = compute_features(sorted(folder.glob("*.png")), enc, cal.views, seed=0, num_workers=0,
                                     cache=FeatureCache(cache, cache_key(enc, cal.views, 0)))
            assert again.n_from_cache == 8
        assert len(svc.log) == n_before
    elapsed = time.monotonic() - t0
    report = json.loads(out.read_text())
    # The secret is nowhere: report, stdout/stderr, any file of the cache.
    assert SECRET not in out.read_text() and SECRET not in proc.stdout + proc.stderr
    for f in cache.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert report["encoder"]["backend"] == "http"
    # Scores against the same encoder scanned locally (in-process).
    attack = cal.get(None).attack  # the scan used the default classifier
    paths = sorted(suspect.glob("*.png"))
    http_scores = {Path(r["path"]).name: r["score"] for r in report["images"]}
    for enc, tol in ((_quantised(local), 1e-4), (local, 0.03)):
        fs = compute_features(paths, enc, cal.views, seed=0, num_workers=0)
        local_scores = dict(zip((r.path.name for r in fs.rows), attack.score(fs.features), strict=True))
        diff = max(abs(http_scores[k] - local_scores[k]) for k in local_scores)
        assert diff <= tol, (enc.spec, diff)
    assert elapsed < 120


def test_interrupted_scan_resumes_without_resending(tmp_path: Path, local: Encoder, images: tuple[Path, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    suspect, _ = images
    monkeypatch.setenv("AUDITMI_TEST_KEY", SECRET)
    cal = load_calibration(EXAMPLE / "calibration")
    from auditmi.cache import FeatureCache
    from auditmi.pipeline import cache_key

    paths = sorted(suspect.glob("*.png"))
    with EmbedService(local, token=SECRET) as svc:
        # 16 views per request, 3 images (30 views -> 2 requests) per pass: the service dies after 2 requests.
        enc = load_encoder(f"http:{_config(tmp_path, svc.url, max_batch=16, concurrency=1, retries=2)}")
        assert enc.batch_size == 16 * 1
        enc.batch_size = 32
        cache = FeatureCache(tmp_path / "cache", cache_key(enc, cal.views, 0))
        svc.fail_after = 2
        with pytest.raises(EncoderUnavailableError, match="kept failing .*re-run the same command to resume") as ei:
            compute_features(paths, enc, cal.views, seed=0, cache=cache, num_workers=0)
        assert ei.value.exit_code == 4 and SECRET not in str(ei.value)
        svc.fail_after = None
        n_before = svc.answered
        fs = compute_features(paths, enc, cal.views, seed=0, cache=cache, num_workers=0)
    # First run: one pass of 3 images cached (2 requests). Rerun: 3 + 2 remaining images, 2 passes.
    assert fs.n_from_cache == 3
    assert svc.answered - n_before == request_count(5, 10, 32, 16) == 4
    assert fs.features.shape[0] == len(paths)


def test_unauthorised_fails_with_exit_4_and_no_secret(tmp_path: Path, local: Encoder, images: tuple[Path, Path]) -> None:
    suspect, _ = images
    import os

    with EmbedService(local, token="the-right-key") as svc:
        cfg = _config(tmp_path, svc.url)
        os.environ["AUDITMI_TEST_KEY"] = SECRET
        try:
            proc = run_cli("scan", suspect, "--encoder", f"http:{cfg}", "--calibration", EXAMPLE / "calibration", "--quiet",
                           "--no-cache")
        finally:
            del os.environ["AUDITMI_TEST_KEY"]
    assert_user_error(proc, 4, "HTTP 401", "unauthorised", "check the credentials")
    assert SECRET not in proc.stderr + proc.stdout
    assert set(svc.statuses()) == {401} and len(svc.log) <= 2  # no retry: at most the 2 requests already in flight


def test_budget_refuses_before_any_request(tmp_path: Path, local: Encoder, images: tuple[Path, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    suspect, reference = images
    monkeypatch.setenv("AUDITMI_TEST_KEY", SECRET)
    with EmbedService(local, token=SECRET) as svc:
        cfg = _config(tmp_path, svc.url, budget_requests=5)
        proc = run_cli("scan", suspect, "--encoder", f"http:{cfg}", "--calibration", EXAMPLE / "calibration",
                       "--reference", reference, "--quiet", "--no-cache")
        # The library refuses too (calibrate/evaluate, or a caller without the CLI).
        enc = load_encoder(f"http:{cfg}")
        with pytest.raises(InputError, match="over the query budget"):
            compute_features(sorted(suspect.glob("*.png")), enc, load_calibration(EXAMPLE / "calibration").views, num_workers=0)
    assert_user_error(proc, 2, "16 images x 10 views = 160 views", "over the query budget", "budget_requests")
    assert svc.log == []


def test_scan_plan_counts_the_encodermi_r_signal_pass(tmp_path: Path, local: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a reference big enough for EncoderMI-R and a bundle with shadows, the scan sends each image
    once, as its views and the whole image (features and signals from the same views): the plan says
    so and counts exactly the requests sent, and a budget one view short is refused before any request."""
    from auditmi.calibrated_scan import MIN_REFERENCE

    suspect, reference = example_subset(tmp_path, 4, MIN_REFERENCE)
    n_img = 4 + MIN_REFERENCE
    views = n_img * (11 + 1)  # views + whole image, then the whole image for the neighbourhood signal (the example bundle's score)
    line = f"{n_img} images x (10 views + the whole image for EncoderMI-R's signals, + 1 whole image for its neighbourhood signal) = {views} views"
    monkeypatch.setenv("AUDITMI_TEST_KEY", SECRET)
    with EmbedService(local, token=SECRET) as svc:
        cfg = _config(tmp_path, svc.url, budget_views=views - 1)
        proc = run_cli("scan", suspect, "--encoder", f"http:{cfg}", "--calibration", EXAMPLE / "calibration",
                       "--reference", reference, "--quiet", "--no-cache")
        assert_user_error(proc, 2, line, "over the query budget", "budget_views")
        assert svc.log == []
        cfg = _config(tmp_path, svc.url, budget_views=views)
        out = tmp_path / "report.json"
        proc = run_cli("scan", suspect, "--encoder", f"http:{cfg}", "--calibration", EXAMPLE / "calibration",
                       "--reference", reference, "--quiet", "--no-cache", "--json", out)
        assert proc.returncode == 0, proc.stderr
        expected = request_count(n_img, 11, 32, 16) + request_count(n_img, 1, 32, 16)
        assert f"{line} in at most {expected} requests" in " ".join(proc.stderr.split())
        assert len(svc.log) == expected and sum(n for _, _, n, _ in svc.log) == views
    assert json.loads(out.read_text())["score"]["name"] == "EncoderMI-R"


def test_scan_with_encodermi_r_sends_what_the_plan_says(tmp_path: Path, local: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Within the budget, a scan with EncoderMI-R (the example bundle's score uses the neighbourhood
    signal) sends exactly the images the plan printed: views + whole image (once), then the whole image."""
    from auditmi.calibrated_scan import MIN_REFERENCE

    suspect, reference = example_subset(tmp_path, 4, MIN_REFERENCE)
    n_img = 4 + MIN_REFERENCE
    planned = n_img * (11 + 1)
    monkeypatch.setenv("AUDITMI_TEST_KEY", SECRET)
    with EmbedService(local, token=SECRET) as svc:
        cfg = _config(tmp_path, svc.url)
        proc = run_cli("scan", suspect, "--encoder", f"http:{cfg}", "--calibration", EXAMPLE / "calibration",
                       "--reference", reference, "--quiet", "--no-cache", "--json", tmp_path / "r.json")
    assert proc.returncode in (0, 1), proc.stderr
    assert f"= {planned} views" in " ".join(proc.stderr.split())
    assert sum(n for _, status, n, _ in svc.log if status == 200) == planned
    assert json.loads((tmp_path / "r.json").read_text())["score"]["name"] == "EncoderMI-R"


def test_calibrate_and_evaluate_print_the_plan_and_keep_the_budget(tmp_path: Path, local: Encoder, images: tuple[Path, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """calibrate --shadow-encoder http:... and evaluate print the same plan line as scan, before any
    request, and it is what they send; over the budget they refuse before any request."""
    mem, non = images
    monkeypatch.setenv("AUDITMI_TEST_KEY", SECRET)
    bundle = tmp_path / "bundle"
    with EmbedService(local, token=SECRET) as svc:
        cfg = _config(tmp_path, svc.url)
        expected = request_count(8, 4, 32, 16) * 2
        line = f"16 images x 4 views = 64 views in at most {expected} requests"
        proc = run_cli("calibrate", "--shadow-encoder", f"http:{cfg}", "--members", mem, "--non-members", non, "--out", bundle,
                       "--views", "4", "--attacks", "T", "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert line in " ".join(proc.stderr.split()) and len(svc.log) == expected
        proc = run_cli("evaluate", "-e", f"http:{cfg}", "-c", bundle, "--members", mem, "--non-members", non, "--quiet", "--no-cache")
        assert proc.returncode == 0, proc.stderr
        assert line in " ".join(proc.stderr.split()) and len(svc.log) == 2 * expected
        tight = _config(tmp_path, svc.url, budget_requests=expected // 2 - 1)  # less than either set needs
        for args in (["calibrate", "--shadow-encoder", f"http:{tight}", "--out", tmp_path / "b2", "--views", "4"],
                     ["evaluate", "-e", f"http:{tight}", "-c", bundle, "--no-cache"]):
            proc = run_cli(*args, "--members", mem, "--non-members", non, "--quiet")
            assert_user_error(proc, 2, line, "over the query budget", "budget_requests")
        assert len(svc.log) == 2 * expected


@pytest.mark.parametrize("protocol", ["openai", "cohere", "jina"])
def test_wire_formats_give_the_quantised_local_embeddings(tmp_path: Path, local: Encoder, protocol: str) -> None:
    with EmbedService(local) as svc:
        enc = load_encoder(f"http:{write_config(tmp_path / 'p.toml', svc.url, protocol=protocol, input_size=32, max_batch=3)}")
        x = torch.rand(7, 3, 32, 32)
        got = enc.embed(x)
    m, s = torch.tensor(local.mean).view(1, 3, 1, 1), torch.tensor(local.std).view(1, 3, 1, 1)
    want = local.embed(((x * 255).round() / 255 - m) / s)
    assert torch.allclose(got, want, atol=1e-5)
    assert svc.statuses() == [200, 200, 200]  # 7 views in requests of at most 3


def test_retry_after_is_honoured(tmp_path: Path, local: Encoder) -> None:
    with EmbedService(local) as svc:
        enc = load_encoder(f"http:{write_config(tmp_path / 'r.toml', svc.url, input_size=32, concurrency=1, backoff=0.01)}")
        svc.faults = ["429", "503"]
        enc.embed(torch.rand(2, 3, 32, 32))
    (t429, s1, *_), (t503, s2, *_), (t_ok, s3, *_) = svc.log
    assert (s1, s2, s3) == (429, 503, 200)
    assert t503 - t429 >= 0.95  # Retry-After: 1
    assert t_ok - t503 < 0.9  # a 503 without Retry-After: short exponential backoff


def test_max_rps_spaces_requests(tmp_path: Path, local: Encoder) -> None:
    with EmbedService(local) as svc:
        enc = load_encoder(f"http:{write_config(tmp_path / 'r.toml', svc.url, input_size=32, max_batch=1, concurrency=3, max_rps=10)}")
        enc.embed(torch.rand(6, 3, 32, 32))
    times = sorted(t for t, *_ in svc.log)
    assert len(times) == 6 and times[-1] - times[0] >= 0.45  # 6 requests at <= 10/s span >= 0.5 s (minus timer slack)


def test_config_secrets_stay_out_of_identity_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", SECRET)
    cfg_path = write_config(tmp_path / "c.toml", "https://api.example.com/v1/embeddings?key=${MY_KEY}&literal=abcd1234",
                            headers={"X-Api-Key": "${MY_KEY}"})
    cfg = read_config(cfg_path)
    ident = identity(cfg)
    assert SECRET not in ident and "abcd1234" not in ident and "${MY_KEY}" in ident
    enc = load_encoder(f"http:{cfg_path}")
    assert SECRET not in json.dumps(enc.describe()) and "abcd1234" not in json.dumps(enc.describe())
    assert enc.forward.redact(f"bad key {SECRET}, abcd1234") == "bad key ***, ***"
    # httpx logs request URLs at INFO level: a host application's logging never sees the key.
    import logging

    rec = logging.LogRecord("httpx", logging.INFO, __file__, 1, "HTTP Request: POST %s", (enc.forward.url,), None)
    assert all(f.filter(rec) for f in logging.getLogger("httpx").filters)
    assert SECRET not in rec.getMessage() and "abcd1234" not in rec.getMessage()
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(EncoderUnavailableError, match=r"\$\{MY_KEY\}.*not set"):
        load_encoder(f"http:{cfg_path}")
    bad = write_config(tmp_path / "bad.toml", "https://x/", max_batch=0)
    with pytest.raises(InputError, match="bad.toml: max_batch must be a positive integer, got 0"):
        read_config(bad)
    (tmp_path / "typo.toml").write_text('url = "https://x/"\nmax_bacth = 3\n')
    with pytest.raises(InputError, match="unknown key.*max_bacth"):
        read_config(tmp_path / "typo.toml")


def test_spec_forms_and_plan() -> None:
    assert parse_spec("http:https://h/v1/embeddings") == ("http", "https://h/v1/embeddings", "url")
    assert parse_spec("https://h/v1/embeddings") == ("http", "https://h/v1/embeddings", "url")
    assert parse_spec("http:api.toml")[::2] == ("http", "config")
    enc = load_encoder("http:https://h/v1/embeddings")
    assert (enc.input_size, enc.mean, enc.std, enc.remote) == (224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), True)
    # request_count: 10 images x 10 views, 64 views per call -> passes of 6 images (60 views = 2 requests of 32) + 4 images (40 = 2).
    assert request_count(10, 10, 64, 32) == 2 + 2
    assert request_count(0, 10, 64, 32) == 0
    cfg = read_config.__globals__["url_config"]("https://h/")
    p = plan(cfg, 1000, 10)
    assert p.views == 10000 and not p.over_budget
    assert np.isclose(p.requests, request_count(1000, 10, cfg.views_per_call, cfg.max_batch))
