from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from rayfleet.platform.validation.drift import (
    chi_square,
    chi_square_isf,
    chi_square_sf,
    drift_band,
    feature_drift,
    jensen_shannon,
    psi,
    psi_band,
    psi_detectable,
    psi_null,
)


def test_psi_by_hand() -> None:
    # Reference 0..99 in 4 bins: edges at its quartiles 24.75, 49.5, 74.25, so
    # 25 values per bin. Current: 10 values in bin 1, 40 in bin 4, none between.
    reference = np.arange(100.0)
    current = np.array([0.0] * 10 + [99.0] * 40)
    shares = np.array([0.2, 1e-4, 1e-4, 0.8])  # the empty bins count as eps
    expected = float(np.sum((shares - 0.25) * np.log(shares / 0.25)))
    assert expected == pytest.approx(
        (0.2 - 0.25) * math.log(0.8)
        + 2 * (1e-4 - 0.25) * math.log(1e-4 / 0.25)
        + (0.8 - 0.25) * math.log(3.2)
    )
    assert psi(reference, current, bins=4) == pytest.approx(expected)


def test_psi_bins_are_closed_on_the_right_and_open_at_the_ends() -> None:
    reference = np.arange(100.0)
    # Quartile edges 24.75, 49.5, 74.25: a value on an edge counts in the bin
    # below it, so these land one per bin; far outside, in the end bins.
    assert psi(reference, np.array([24.75, 49.5, 74.25, 1e9]), bins=4) == 0.0
    assert psi(reference, np.array([-1e9, 49.5, 74.25, 1e9]), bins=4) == 0.0


def test_psi_merges_repeated_edges_of_zero_heavy_features() -> None:
    reference = np.array([0.0] * 70 + list(range(1, 31)))
    assert psi(reference, reference) == 0.0
    shifted = np.array([0.0] * 30 + list(range(1, 71)))
    assert psi(reference, shifted) > 0.25


def test_psi_on_a_constant_and_bad_input() -> None:
    assert psi(np.ones(10), np.ones(5)) == 0.0
    assert psi_band(psi(np.ones(10), np.full(5, 2.0))) == "major"
    with pytest.raises(ValueError, match="non-empty"):
        psi(np.array([np.nan]), np.ones(3))


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (0.0, "none"),
        (0.099, "none"),
        (0.1, "moderate"),
        (0.25, "moderate"),
        (0.26, "major"),
    ],
)
def test_psi_bands(value: float, band: str) -> None:
    assert psi_band(value) == band


def test_jensen_shannon_against_scipy() -> None:
    rng = np.random.default_rng(3)
    for size in (2, 3, 10, 50):
        p, q = rng.integers(0, 40, size), rng.integers(0, 40, size)
        p[0] = q[0] = 1  # both non-empty
        expected = jensenshannon(p, q, base=2) ** 2
        assert jensen_shannon(p, q) == pytest.approx(expected, abs=1e-12)
    assert jensen_shannon([1, 0], [0, 1]) == 1.0
    assert jensen_shannon({"a": 3, "b": 1}, {"b": 2, "a": 6}) == 0.0


def test_counts_as_mappings_align_by_key() -> None:
    assert chi_square({1: 10, 2: 30}, {2: 30, 1: 10}) == chi_square([10, 30], [10, 30])
    with pytest.raises(TypeError):
        chi_square({1: 1}, [1])
    with pytest.raises(ValueError, match="length"):
        jensen_shannon([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positive total"):
        jensen_shannon([0, 0], [1, 2])


@pytest.mark.parametrize("size", [2, 3, 10])
def test_chi_square_against_chi2_contingency(size: int) -> None:
    rng = np.random.default_rng(size)
    for _ in range(5):
        p, q = rng.integers(1, 60, size), rng.integers(1, 60, size)
        statistic, pvalue = chi_square(p, q)
        expected = stats.chi2_contingency(np.array([p, q]))
        assert statistic == pytest.approx(expected.statistic, rel=1e-12)
        assert pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_chi_square_drops_empty_categories() -> None:
    statistic, pvalue = chi_square([5, 0, 7, 3], [4, 0, 9, 1])
    expected = stats.chi2_contingency(np.array([[5, 7, 3], [4, 9, 1]]))
    assert (statistic, pvalue) == pytest.approx((expected.statistic, expected.pvalue))
    assert chi_square([5, 0], [9, 0]) == (0.0, 1.0)


@pytest.mark.parametrize("dof", [1, 2, 3, 9, 30, 100, 1000])
def test_chi_square_sf_against_scipy(dof: int) -> None:
    for x in (1e-6, 0.5, 1.0, 5.0, 20.0, 100.0, 900.0, 1100.0, 3000.0):
        expected = stats.chi2.sf(x, dof)
        assert chi_square_sf(x, dof) == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert chi_square_sf(0.0, dof) == 1.0


def _features(rng: np.random.Generator, rows: int, width: int) -> dict[str, np.ndarray]:
    return {f"f{i}": rng.normal(size=rows) for i in range(width)}


def test_feature_drift_report() -> None:
    rng = np.random.default_rng(0)
    reference = _features(rng, 500, 4)
    current = _features(rng, 400, 4)
    current["f2"] = current["f2"] + 1.0
    current["extra"] = np.zeros(3)  # only shared features are tested
    report = feature_drift(reference, current, alpha=0.05)
    assert [row.name for row in report.features] == ["f0", "f1", "f2", "f3"]
    assert report.drifted_features == ("f2",) and report.drifted
    assert report.drifted_share == 0.25
    assert report.threshold == 0.05 / 4
    assert report.features[2].band == "major"
    assert report.max_psi == report.features[2].psi
    assert report.features[0].current_size == 400
    json.dumps(report.to_dict())


def test_feature_drift_skips_empty_features_and_needs_one_shared() -> None:
    reference = {"a": np.ones(5), "b": np.array([np.nan])}
    report = feature_drift(reference, {"a": np.ones(5), "b": np.ones(5)})
    assert [row.name for row in report.features] == ["a"] and report.skipped == ("b",)
    with pytest.raises(ValueError, match="no feature in common"):
        feature_drift({"a": np.ones(3)}, {"b": np.ones(3)})


TRIALS = 200
FEATURES = 64
ROWS = 500


def test_identical_distributions_rarely_drift() -> None:
    # Bonferroni bounds the chance that any of the 64 features is flagged at alpha
    # = 0.05. 200 trials at exactly 0.05 give Binomial(200, 0.05): mean 10, sd
    # 3.08; mean + 3 sd = 19.2, exceeded with probability about 0.002. The test
    # is seeded, so this only says the bound leaves room. Measured: 6 of 200
    # (and 53 of 1000 trials on another seed, against 48.8 expected for 64
    # independent features).
    rng = np.random.default_rng(2024)
    flagged = sum(
        feature_drift(
            _features(rng, ROWS, FEATURES), _features(rng, ROWS, FEATURES), 0.05
        ).drifted
        for _ in range(TRIALS)
    )
    assert flagged <= 19


def test_half_sigma_shift_in_one_feature_is_found() -> None:
    # KS at n = m = 500 separates a 0.5 sigma shift (expected statistic 0.197)
    # from the 0.05 / 64 critical value (about 0.125) almost always.
    # Measured: 200 of 200.
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(TRIALS):
        reference = _features(rng, ROWS, FEATURES)
        current = _features(rng, ROWS, FEATURES)
        current["f5"] = current["f5"] + 0.5
        found += "f5" in feature_drift(reference, current, 0.05).drifted_features
    assert found >= 0.95 * TRIALS


def test_psi_null_by_hand() -> None:
    assert psi_null(10, 540, 100) == 9 * (1 / 100 + 1 / 540)
    assert psi_null(4, 100, 50) == 3 * (1 / 50 + 1 / 100)
    assert psi_null(1, 540, 100) == 0.0  # a constant feature: nothing to be biased
    with pytest.raises(ValueError, match="positive"):
        psi_null(10, 0, 100)


def test_psi_null_is_the_mean_psi_of_identical_samples() -> None:
    # The derivation (PSI ~ Pearson's distance, E = (k - 1)(1/n + 1/m)) checked
    # against psi() itself: its decile bins, quantile edges and eps floor. Over
    # 4000 pairs the means are 4.9%, 1.3% and 1.1% above psi_null; over these
    # 400 the standard error is about 2.5% more.
    rng = np.random.default_rng(11)
    for size in (100, 300, 1000):
        values = [psi(rng.normal(size=540), rng.normal(size=size)) for _ in range(400)]
        assert np.mean(values) == pytest.approx(psi_null(10, 540, size), rel=0.1)


@pytest.mark.parametrize("dof", [1, 2, 9, 30])
@pytest.mark.parametrize("pvalue", [0.5, 0.05, 0.05 / 64, 1e-9])
def test_chi_square_isf_against_scipy(dof: int, pvalue: float) -> None:
    expected = stats.chi2.isf(pvalue, dof)
    assert chi_square_isf(pvalue, dof) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="pvalue"):
        chi_square_isf(1.0, dof)


def test_psi_detectable_by_hand() -> None:
    critical = stats.chi2.isf(0.05 / 64, 9)
    expected = (1 / 300 + 1 / 540) * (critical - 9)
    assert psi_detectable(10, 540, 300, 0.05 / 64) == pytest.approx(expected)
    assert psi_detectable(1, 540, 300, 0.05 / 64) == 0.0


@pytest.mark.parametrize(
    ("corrected", "detectable", "evidence", "band"),
    [
        (0.3, 0.05, True, "major"),
        (0.3, 0.05, False, "none"),  # no test found it: noise, however large
        (0.3, 0.2, False, "insufficient"),  # ...and too few rows to say "none"
        (0.12, 0.2, True, "moderate"),  # found: the size reads at any sample size
        (0.05, 0.05, True, "none"),  # found, and small
        (0.0, 0.1, False, "none"),  # a moderate shift would just show
    ],
)
def test_drift_band(
    corrected: float, detectable: float, evidence: bool, band: str
) -> None:
    assert drift_band(corrected, detectable, evidence) == band


# 0..999: decile edges at 99.9, 199.8, ..., 100 reference values in each bin.
BY_HAND_REFERENCE = np.arange(1000.0)


def _in_bins(counts: list[int]) -> np.ndarray:
    """Values falling ``counts[i]`` times in bin ``i`` of BY_HAND_REFERENCE."""
    return np.repeat(np.arange(10) * 100 + 50.0, counts)


@pytest.mark.parametrize(
    ("counts", "raw", "band"),
    [
        # A third of the mass moved up: raw 0.25 ln 3 = 0.275, "major" as read
        # before. On 40 rows 0.234 of it is the bias; KS finds the move, but what
        # is left, 0.041, is small.
        ([2] * 5 + [6] * 5, 0.25 * math.log(3), "none"),
        # The same shares on 400 rows: the bias is 0.032, the shift moderate.
        ([20] * 5 + [60] * 5, 0.25 * math.log(3), "moderate"),
        # One bin empty on 20 rows: eps makes the raw index 0.76, the corrected
        # one 0.30, and neither test finds anything: too few rows to say "none".
        (
            [0, 4] + [2] * 8,
            (1e-4 - 0.1) * math.log(1e-3) + 0.1 * math.log(2),
            "insufficient",
        ),
        # Unmoved on 50 rows: still too few to rule out a moderate shift.
        ([5] * 10, 0.0, "insufficient"),
        # Unmoved on 100 rows: a moderate shift would have shown.
        ([10] * 10, 0.0, "none"),
    ],
)
def test_feature_drift_corrects_psi_and_bands_on_evidence(
    counts: list[int], raw: float, band: str
) -> None:
    current = _in_bins(counts)
    row = feature_drift({"x": BY_HAND_REFERENCE}, {"x": current}).features[0]
    null = 9 * (1 / current.size + 1 / 1000)
    assert row.psi == pytest.approx(raw)
    assert row.psi_null == pytest.approx(null)
    assert row.psi_corrected == pytest.approx(max(raw - null, 0.0))
    expected = stats.chi2_contingency(np.array([[100] * 10, counts])).pvalue
    assert row.psi_pvalue == pytest.approx(expected)
    critical = stats.chi2.isf(0.05, 9)  # one feature: no Bonferroni split
    assert row.psi_detectable == pytest.approx(
        (1 / current.size + 1e-3) * (critical - 9)
    )
    assert row.band == band


def test_bias_counts_the_bins_the_reference_occupies() -> None:
    # Pixel-like: 70% zeros, then 1..30. The deciles merge into 4 edges (0 and the
    # 80th, 90th percentiles...), so 4 bins are occupied, not 10.
    reference = np.array([0.0] * 70 + list(range(1, 31)))
    row = feature_drift({"x": reference}, {"x": reference}).features[0]
    assert row.psi == 0.0
    edges = np.unique(np.quantile(reference, np.arange(1, 10) / 10))
    occupied = np.count_nonzero(
        np.bincount(np.searchsorted(edges, reference), minlength=edges.size + 1)
    )
    assert row.psi_null == pytest.approx((occupied - 1) * 2 / 100)
    constant = feature_drift({"x": np.zeros(50)}, {"x": np.zeros(20)}).features[0]
    assert (constant.psi_null, constant.psi_detectable, constant.band) == (
        0.0,
        0.0,
        "none",
    )


def test_identical_features_no_longer_read_moderate() -> None:
    # The dashboard: 64 features, identical distributions, a hundred
    # canary rows against the demo's 540 reference rows. Raw PSI reads about half
    # of them moderate or worse (its expectation, 0.107, is past 0.1); the bands
    # on evidence read none of them so. Measured: 63 of 128 raw.
    rng = np.random.default_rng(5)
    raw = banded = 0
    for _ in range(2):
        report = feature_drift(
            _features(rng, 540, FEATURES), _features(rng, 100, FEATURES), 0.05
        )
        raw += sum(psi_band(row.psi) != "none" for row in report.features)
        banded += sum(row.band in ("moderate", "major") for row in report.features)
    assert raw >= 40
    assert banded == 0


_KINDS = st.sampled_from(["normal", "lognormal", "integers", "zero-heavy"])


def _draw(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=size)
    if kind == "lognormal":
        return rng.lognormal(sigma=1.5, size=size)
    if kind == "integers":
        return rng.integers(0, 17, size=size).astype(np.float64)
    # Like a digits pixel: mostly 0, else 1..16.
    return np.where(rng.random(size) < 0.7, 0.0, rng.integers(1, 17, size=size))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(kind=_KINDS, seed=st.integers(0, 2**32 - 1), size=st.integers(2000, 5000))
def test_identical_large_samples_read_none(kind: str, seed: int, size: int) -> None:
    # alpha 1e-6: a test of one feature on identical data finds "evidence" with
    # that probability; at 0.05 one example in twenty would, by design. (Equal
    # sizes also keep the exact KS test fast.)
    rng = np.random.default_rng(seed)
    reference, current = _draw(kind, rng, size), _draw(kind, rng, size)
    row = feature_drift({"x": reference}, {"x": current}, alpha=1e-6).features[0]
    # The corrected PSI's spread is at most sqrt(2 * 9) * 2 / 2000 = 0.004 here;
    # 0.02 is five of those.
    assert row.psi_corrected < 0.02
    assert row.band == "none"


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    kind=_KINDS,
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(300, 1000),
    shift=st.floats(1.5, 5.0),
)
def test_a_strong_shift_reads_major(
    kind: str, seed: int, size: int, shift: float
) -> None:
    # A shift of 1.5 reference sd or more has a PSI over 1, far past 0.25 however
    # the bins fall, and both tests find it on 300 rows.
    rng = np.random.default_rng(seed)
    reference = _draw(kind, rng, 540)
    current = _draw(kind, rng, size) + shift * reference.std()
    report = feature_drift({"x": reference}, {"x": current}, alpha=0.05 / 64)
    assert report.features[0].band == "major"
