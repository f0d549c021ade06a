"""A scan with shadows and a reference embeds the audited encoder once per image (features and
EncoderMI-R's signals from the same views, ``what="both"``), with the scores, p-values and
verdict of separate feature and signal passes (the way scans ran before), and fills the caches
those passes use."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from e2e_support import example_subset

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "fashion"


def _counting(monkeypatch: pytest.MonkeyPatch, counts: dict[str, int]) -> None:
    """Make the scan's encoder count the inputs it embeds (``counts["audited"]``)."""
    import auditmi.jobs.scan as scan_mod

    real = scan_mod.load_encoder

    def load(spec: str, device: str = "auto", amp: bool = True):  # type: ignore[no-untyped-def]
        enc = real(spec, device, amp=amp)
        fwd = enc.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            counts["audited"] += int(x.shape[0])
            return fwd(x)

        return dataclasses.replace(enc, forward=forward)

    monkeypatch.setattr(scan_mod, "load_encoder", load)


def _by_path(result) -> dict[str, tuple[float, float | None, bool]]:  # type: ignore[no-untyped-def]
    return {str(r.path): (r.score, r.p_value, r.member) for r in result.images}


def test_scan_embeds_the_audited_encoder_once_with_the_scores_of_separate_passes(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from auditmi.cache import FeatureCache
    from auditmi.calibration import load_calibration
    from auditmi.difficulty import uses_neighbours
    from auditmi.encoders.local import load_local
    from auditmi.engines import compute_features
    from auditmi.jobs.scan import ScanOptions, run_scan
    from auditmi.measures import cache_key, signal_cache_key
    from auditmi.shadow_set import load_shadows, shadow_encoder

    sus, ref = example_subset(tmp_path, 12, 40)
    n_img = 52
    cal = load_calibration(EXAMPLE / "calibration")
    cfg, cpu = cal.views, torch.device("cpu")
    counts = {"audited": 0}
    _counting(monkeypatch, counts)
    opts = ScanOptions(encoder=str(EXAMPLE / "encoder"), calibration=EXAMPLE / "calibration", reference=[ref], workers=0,
                       cache_dir=tmp_path / "one-pass")
    one = run_scan([sus], opts)
    assert one.score is not None and one.score.name == "EncoderMI-R"
    # Each image once through the engine: its 10 views and the whole image (and once more, the whole
    # image alone, when the bundle's score uses the neighbourhood signal: auditmi.neighbours).
    nn = int(uses_neighbours(load_shadows(cal.meta, cal.path).spec))
    assert counts["audited"] == n_img * (cfg.n_views + 1 + nn)

    # Today's separate passes, each filling its own cache: the audited encoder's feature pass
    # (suspects, then reference) and one signal pass per encoder over both lists.
    root = tmp_path / "separate"
    enc = load_local(EXAMPLE / "encoder", cpu)
    paths = {"sus": sorted(sus.glob("*.png")), "ref": sorted(ref.glob("*.png"))}
    feats = {k: compute_features(p, enc, cfg, seed=0, num_workers=0, cache=FeatureCache(root, cache_key(enc, cfg, 0)))
             for k, p in paths.items()}
    for e in [enc, *(shadow_encoder(s, cpu) for s in load_shadows(cal.meta, cal.path).shadows)]:
        compute_features([*paths["sus"], *paths["ref"]], e, cfg, seed=0, num_workers=0, what="signals",
                         cache=FeatureCache(root, signal_cache_key(e, cfg, 0)))
    counts["audited"] = 0
    sep = run_scan([sus], dataclasses.replace(opts, cache_dir=root))
    assert counts["audited"] == n_img * nn  # every row came from the caches the separate passes wrote
    assert sep.verdict == one.verdict
    a, b = _by_path(one), _by_path(sep)
    assert a.keys() == b.keys() and len(a) == 12
    assert max(abs(a[p][0] - b[p][0]) for p in a) <= 1e-6
    assert max(abs(a[p][1] - b[p][1]) for p in a) <= 1e-6  # type: ignore[operator]
    assert {p: v[2] for p, v in a.items()} == {p: v[2] for p, v in b.items()}
    assert one.reference is not None and sep.reference is not None
    np.testing.assert_allclose(one.reference.scores, sep.reference.scores, atol=1e-6, rtol=0)
    assert one.statistics.rank_test is not None and sep.statistics.rank_test is not None
    assert abs(one.statistics.rank_test.p_value - sep.statistics.rank_test.p_value) <= 1e-9

    # The one pass filled the feature cache and the audited encoder's signal cache: a later feature
    # pass (evaluate, a reference-free scan) or signal pass embeds nothing, and gets the same numbers.
    fc = FeatureCache(tmp_path / "one-pass", cache_key(enc, cfg, 0))
    again = compute_features(paths["sus"], enc, cfg, seed=0, num_workers=0, cache=fc)
    assert again.n_from_cache == 12
    np.testing.assert_allclose(again.features, feats["sus"].features, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(again.stats, feats["sus"].stats)
    sc = FeatureCache(tmp_path / "one-pass", signal_cache_key(enc, cfg, 0))
    assert compute_features(paths["ref"], enc, cfg, seed=0, num_workers=0, cache=sc, what="signals").n_from_cache == 40


def test_reference_free_scan_embeds_suspects_and_reference_in_one_pass_of_views_only(tmp_path: Path,
                                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Below EncoderMI-R's reference size the scan keeps EncoderMI's n views per image (no whole image)."""
    from auditmi.jobs.scan import ScanOptions, run_scan

    sus, ref = example_subset(tmp_path, 6, 10)
    counts = {"audited": 0}
    _counting(monkeypatch, counts)
    res = run_scan([sus], ScanOptions(encoder=str(EXAMPLE / "encoder"), calibration=EXAMPLE / "calibration", reference=[ref],
                                      workers=0, use_cache=False))
    assert res.score is not None and res.score.name != "EncoderMI-R"
    assert counts["audited"] == 16 * 10


def test_paired_cache_resumes_a_batch_written_to_one_cache_only(tmp_path: Path) -> None:
    """A 'both' pass killed between its two writes of a batch recomputes that batch on resume."""
    from auditmi.cache import FeatureCache
    from auditmi.measures import BOTH, Measure, PairedCache, cache_key, signal_cache_key
    from auditmi.signals import n_raw, pairwise_block

    class Enc:  # what the cache keys read
        identity, input_size, mean, std = "e", 32, (0.5,) * 3, (0.2,) * 3

    from auditmi.views import ViewConfig

    cfg = ViewConfig(n_views=4)
    m = Measure(BOTH, 4)
    pc = m.open_cache(tmp_path, Enc(), cfg, 0)  # type: ignore[arg-type]
    assert isinstance(pc, PairedCache)
    rows = np.random.default_rng(0).random((3, n_raw(4)), dtype=np.float32)
    stats = np.ones((3, m.n_stats), np.float32)
    pc.signals.put(["a", "b", "c"], rows, np.zeros((3, 0), np.float32))  # the feature shard never came
    assert pc.load() == {}
    pc.put(["a", "b"], rows[:2], stats[:2])
    got = pc.reopen().load()
    assert sorted(got) == ["a", "b"]
    np.testing.assert_array_equal(got["a"][0], rows[0])
    f = FeatureCache(tmp_path, cache_key(Enc(), cfg, 0)).load()  # type: ignore[arg-type]
    np.testing.assert_array_equal(f["b"][0], pairwise_block(rows[1:2], 4)[0])
    assert sorted(FeatureCache(tmp_path, signal_cache_key(Enc(), cfg, 0)).load()) == ["a", "b", "c"]  # type: ignore[arg-type]
