"""ks_2samp against scipy's, the reference it must equal to 1e-9 (scipy is dev-only)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from rayfleet.platform.validation.kolmogorov import kolmogorov_sf, ks_2samp, smirnov_sf

TOLERANCE = 1e-9

# (n1, n2, shift of b, integer data with ties). Up to 10,000 values scipy's
# method="auto" is exact: equal sizes take the closed form, unequal sizes the
# lattice walk. Above, it is asymptotic, with n = round(n1 n2 / (n1 + n2)) picking
# among Durbin's matrix (n <= 140 or small n d^2), Pelz-Good, and Smirnov's tail.
CASES = [
    (1, 1, 0.0, False),
    (3, 4, 0.0, False),
    (5, 7, 0.5, False),
    (10, 10, 0.0, False),
    (10, 10, 1.5, False),
    (50, 80, 0.3, False),
    (300, 200, 0.0, True),
    (500, 500, 0.5, False),
    (1000, 540, 0.1, False),
    (1000, 540, 0.0, True),
    (2000, 3000, 0.05, False),
    (10_000, 10_000, 0.0, False),
    (20_000, 500, 0.1, False),
    (20_000, 500, 0.0, True),
    (12_000, 12_000, 0.02, False),
    (30_000, 100, 0.2, False),
    (30_000, 100, 0.6, False),
    (20_000, 20_000, 0.3, False),
    (15_000, 4_000, 0.0, False),
]


@pytest.mark.parametrize(("n1", "n2", "shift", "ties"), CASES)
def test_matches_scipy(n1: int, n2: int, shift: float, ties: bool) -> None:
    rng = np.random.default_rng(n1 * 31 + n2)
    for _ in range(2):
        if ties:
            a = rng.integers(0, 6, n1).astype(float)
            b = (rng.integers(0, 6, n2) + round(shift)).astype(float)
        else:
            a, b = rng.normal(size=n1), rng.normal(shift, size=n2)
        statistic, pvalue = ks_2samp(a, b)
        expected = stats.ks_2samp(a, b)
        assert statistic == pytest.approx(expected.statistic, abs=TOLERANCE)
        assert pvalue == pytest.approx(expected.pvalue, abs=TOLERANCE)


def test_identical_samples_and_nan() -> None:
    same = np.arange(20.0)
    assert ks_2samp(same, same) == (0.0, 1.0)
    statistic, pvalue = ks_2samp(np.array([1.0, np.nan]), same)
    assert np.isnan(statistic) and np.isnan(pvalue)
    with pytest.raises(ValueError, match="non-empty"):
        ks_2samp(np.array([]), same)


@pytest.mark.parametrize("n", [1, 2, 7, 140, 141, 1000, 50_000, 100_001])
def test_kolmogorov_sf_matches_kstwo(n: int) -> None:
    xs = np.concatenate([np.linspace(1e-4, 0.999, 80), [0.5 / n, 1 / n, (n - 1) / n]])
    for x in xs:
        assert kolmogorov_sf(n, float(x)) == pytest.approx(
            stats.kstwo.sf(x, n), abs=1e-12
        )


@pytest.mark.parametrize("n", [2, 10, 1012, 1013, 20_000, 2_000_000])
def test_smirnov_sf_matches_scipy(n: int) -> None:
    for x in np.linspace(1e-4, 0.9999, 60):
        assert smirnov_sf(n, float(x)) == pytest.approx(
            special.smirnov(n, x), abs=1e-12
        )
