"""Distribution drift: PSI and KS per feature, JS and chi-square for categories.

- :func:`psi`, the population stability index, measures how far a feature moved,
  on the scale practitioners read: under 0.1 none, 0.1 to 0.25 moderate, above
  0.25 major.
- :func:`ks_2samp` (from :mod:`.kolmogorov`) says whether it moved at all,
  with a p-value; :func:`feature_drift` flags a feature on that p-value.
- :func:`jensen_shannon` and :func:`chi_square` compare distributions over
  categories, such as the classes two versions predict.

PSI between two finite samples of one distribution is not 0. To second order it
is Pearson's chi-square distance between the bin shares, so its expectation is
:func:`psi_null`, ``(k - 1) (1/n + 1/m)`` for ``k`` bins, ``n`` current and ``m``
reference values: 0.107 at 100 requests against the demo's 540 reference rows,
more than the 0.1 that reads "moderate". (With bins cut at the reference's
quantiles the reference shares are fixed, but where the population puts those
cuts varies by the same ``p (1 - p) / m`` per bin, so the ``1/m`` term stays.)
:func:`feature_drift` therefore does both things one can do about it: it
reports the bias-corrected PSI next to the raw one, and it shows a band only on
evidence, reading "insufficient" rather than "none" while the sample is too
small to have shown a moderate shift (:func:`drift_band`). Correcting alone
is not enough: the corrected PSI keeps the noise's spread, about
``sqrt(2 (k - 1)) (1/n + 1/m)``, 0.05 at 100 requests, so on 64 features a few
would still cross 0.1 by chance. Evidence alone is not
enough either: with a few thousand rows a test finds shifts far too small to
matter, and the band should then read their size, not the test's confidence.

Nothing here imports scipy; the chi-square p-value comes from the regularized
incomplete gamma function below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from rayfleet.platform.validation._json import json_float
from rayfleet.platform.validation.kolmogorov import ks_2samp

__all__ = [
    "Counts",
    "DriftReport",
    "FeatureDrift",
    "chi_square",
    "chi_square_isf",
    "chi_square_sf",
    "drift_band",
    "feature_drift",
    "jensen_shannon",
    "psi",
    "psi_band",
    "psi_detectable",
    "psi_null",
]

# Category keys are anything hashable; Any because Mapping is invariant in its key.
Counts = Mapping[Any, float] | Sequence[float] | np.ndarray
Band = Literal["none", "moderate", "major"]
# A feature's band: a PSI's reading, or "insufficient" while the sample is too
# small for "none" to mean anything (see drift_band).
FeatureBand = Literal["none", "moderate", "major", "insufficient"]

# PSI bands as commonly read in credit-risk practice, where the index comes from.
_MODERATE_PSI = 0.1
_MAJOR_PSI = 0.25
# psi()'s default bin count: deciles, the usual choice for PSI.
_PSI_BINS = 10
# psi()'s default floor on a bin's share: an empty bin adds a large (ln 1000 per
# 0.1 of share it lacks) but finite term, not an infinite one.
_PSI_EPS = 1e-4


def psi(
    reference: np.ndarray,
    current: np.ndarray,
    bins: int = _PSI_BINS,
    eps: float = _PSI_EPS,
) -> float:
    """Population stability index of ``current`` against ``reference``.

    ``sum((c - r) * ln(c / r))`` over bins cut at the reference's quantiles
    (``1/bins, ..., (bins-1)/bins``), with repeated edges merged, so discrete or
    zero-heavy features get fewer, not empty, bins. Bins are closed on the right,
    ``(e[i-1], e[i]]``, and the first and last are open-ended, so every value of
    ``current`` lands somewhere. Shares below ``eps`` count as ``eps``, so a bin
    one side leaves empty adds a large but finite term. Non-finite values are
    dropped.

    This is the raw index: on two samples of one distribution it averages
    :func:`psi_null`, not 0.
    """
    ref = _finite(reference)
    cur = _finite(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("psi needs non-empty reference and current samples")
    if bins < 2:
        raise ValueError(f"psi needs at least 2 bins: {bins}")
    return _psi_of_counts(*_binned(ref, cur, bins), eps)


def _binned(
    ref: np.ndarray, cur: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of finite, non-empty ``ref`` and ``cur`` in :func:`psi`'s bins."""
    edges = np.unique(_quantiles(np.sort(ref), np.arange(1, bins) / bins))
    return _bin_counts(ref, edges), _bin_counts(cur, edges)


def _psi_of_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float) -> float:
    ref_share = np.maximum(ref_counts / ref_counts.sum(), eps)
    cur_share = np.maximum(cur_counts / cur_counts.sum(), eps)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def psi_null(bins: int, reference_size: int, current_size: int) -> float:
    """The PSI expected between samples of one distribution: its small-sample bias.

    ``(bins - 1) * (1 / current_size + 1 / reference_size)``, where ``bins``
    counts the bins the reference occupies (a constant feature has one, and no
    bias). PSI is, to second order, Pearson's chi-square distance between the
    shares, whose null expectation this is. Measured with :func:`psi`'s decile
    bins over 4000 pairs of normal samples against 540 reference values: mean
    0.112 at 100 values (this gives 0.107; the terms of higher order add the 5%),
    0.0473 at 300 (0.0467), 0.0260 at 1000 (0.0257). Their spread is about
    ``sqrt(2 (bins - 1))`` times ``1/n + 1/m``, as for a chi-square.
    """
    if bins < 1 or reference_size < 1 or current_size < 1:
        raise ValueError(
            "psi_null needs positive bins and sizes: "
            f"{bins}, {reference_size}, {current_size}"
        )
    return (bins - 1) * (1 / current_size + 1 / reference_size)


def psi_detectable(
    bins: int, reference_size: int, current_size: int, pvalue: float
) -> float:
    """The true PSI at which the chi-square test on the PSI's bins reaches
    ``pvalue`` on average, on samples of these sizes: below it, shifts are missed.

    Under a shift of PSI ``d`` the test's statistic is about a noncentral
    chi-square with ``bins - 1`` degrees of freedom and noncentrality
    ``d / (1/n + 1/m)`` (the same second-order identity as :func:`psi_null`); its
    mean reaches the critical value when ``d`` is ``(1/n + 1/m)`` times the
    critical value less the degrees of freedom; a shift of that size is found
    about half the time. ``0.0`` for one bin: anything new is then out of range.
    """
    scale = psi_null(2, reference_size, current_size)
    dof = bins - 1
    if dof < 1:
        return 0.0
    return scale * (chi_square_isf(pvalue, dof) - dof)


def _quantiles(ordered: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """``np.quantile(ordered, probabilities)`` (linear) of sorted data, without
    its overhead, which dominated :func:`feature_drift` on 64 features."""
    position = probabilities * (ordered.size - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, ordered.size - 1)
    low, high, t = ordered[below], ordered[above], position - below
    # numpy's two-sided lerp: exact at both ends and monotonic in t.
    result: np.ndarray = np.where(
        t >= 0.5, high - (high - low) * (1 - t), low + (high - low) * t
    )
    return result


def _finite(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(
        np.searchsorted(edges, values, side="left"), minlength=edges.size + 1
    )


def psi_band(value: float) -> Band:
    """The conventional reading of a PSI: none, moderate or major."""
    if value < _MODERATE_PSI:
        return "none"
    return "moderate" if value <= _MAJOR_PSI else "major"


def drift_band(corrected: float, detectable: float, evidence: bool) -> FeatureBand:
    """A feature's band: the reading of its bias-corrected PSI, on evidence only.

    With ``evidence`` (a test found the feature changed), :func:`psi_band` of
    ``corrected``: a real but small change reads "none". Without it, "none" if
    the sample could have shown a moderate shift (``detectable``, from
    :func:`psi_detectable`, at most the moderate threshold), else
    "insufficient": "none" would claim more than the data show. "none" is that
    modest a claim: ``detectable`` is the shift found about half the time. The
    evidence is either of two tests (KS, or chi-square on the PSI's bins), so a
    false band is up to twice as likely as each test's threshold.
    """
    if evidence:
        return psi_band(corrected)
    return "none" if detectable <= _MODERATE_PSI else "insufficient"


def _aligned(p_counts: Counts, q_counts: Counts) -> tuple[np.ndarray, np.ndarray]:
    """Two count vectors over the same categories.

    Mappings are matched by key (a key one side lacks counts 0 there); sequences
    by position, and must have the same length.
    """
    if isinstance(p_counts, Mapping) and isinstance(q_counts, Mapping):
        keys = list(dict.fromkeys([*p_counts, *q_counts]))
        p = np.array([p_counts.get(key, 0) for key in keys], dtype=np.float64)
        q = np.array([q_counts.get(key, 0) for key in keys], dtype=np.float64)
    elif isinstance(p_counts, Mapping) or isinstance(q_counts, Mapping):
        raise TypeError("pass both counts as mappings or both as sequences")
    else:
        p = np.asarray(p_counts, dtype=np.float64).ravel()
        q = np.asarray(q_counts, dtype=np.float64).ravel()
        if p.shape != q.shape:
            raise ValueError(f"count vectors differ in length: {p.size} != {q.size}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("counts must not be negative")
    if p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("each side needs a positive total count")
    return p, q


def jensen_shannon(p_counts: Counts, q_counts: Counts) -> float:
    """Jensen-Shannon divergence of two categorical distributions, in bits.

    0 for identical distributions, 1 for disjoint ones. Counts are normalized
    first; they may be mappings from category to count or aligned sequences.
    (``scipy.spatial.distance.jensenshannon`` returns the square root of this.)
    """
    p, q = _aligned(p_counts, q_counts)
    p, q = p / p.sum(), q / q.sum()
    mid = (p + q) / 2
    total = 0.0
    for side in (p, q):
        present = side > 0
        total += 0.5 * float(
            np.sum(side[present] * np.log2(side[present] / mid[present]))
        )
    return min(max(total, 0.0), 1.0)


def chi_square(p_counts: Counts, q_counts: Counts) -> tuple[float, float]:
    """Pearson's chi-square test that two count vectors share one distribution.

    The 2 x K contingency test of ``scipy.stats.chi2_contingency``, including its
    default Yates continuity correction when there is one degree of freedom.
    Categories empty on both sides are dropped; one category left gives
    ``(0.0, 1.0)``. Returns ``(statistic, pvalue)``.
    """
    p, q = _aligned(p_counts, q_counts)
    observed = np.stack([p, q])
    observed = observed[:, observed.sum(axis=0) > 0]
    dof = observed.shape[1] - 1
    if dof == 0:
        return 0.0, 1.0
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    if dof == 1:
        gap = expected - observed
        observed = observed + np.sign(gap) * np.minimum(0.5, np.abs(gap))
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, chi_square_sf(statistic, dof)


def chi_square_sf(statistic: float, dof: int) -> float:
    """``P(X >= statistic)`` for ``X`` chi-square with ``dof`` degrees of freedom.

    The regularized upper incomplete gamma ``Q(dof/2, statistic/2)``.
    """
    if dof < 1:
        raise ValueError(f"dof must be positive: {dof}")
    if statistic <= 0:
        return 1.0
    return _upper_gamma(dof / 2, statistic / 2)


@lru_cache(maxsize=256)
def chi_square_isf(pvalue: float, dof: int) -> float:
    """The ``x`` with ``chi_square_sf(x, dof) == pvalue``: the critical value.

    Found by bisection on :func:`chi_square_sf` to a relative ``1e-12``; cached,
    since a report asks for the same few (``pvalue``, ``dof``) pairs each time.
    """
    if not 0 < pvalue < 1:
        raise ValueError(f"pvalue must be in (0, 1): {pvalue}")
    if dof < 1:
        raise ValueError(f"dof must be positive: {dof}")
    low, high = 0.0, float(dof)
    while chi_square_sf(high, dof) > pvalue:
        low, high = high, 2 * high
    while high - low > 1e-12 * high:
        middle = (low + high) / 2
        if chi_square_sf(middle, dof) > pvalue:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def _upper_gamma(a: float, x: float) -> float:
    """Regularized ``Q(a, x)``: a power series below ``a + 1``, else a continued
    fraction (modified Lentz), each accurate to a few ulps in its region."""
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        # P(a, x) = x^a e^-x / Gamma(a + 1) * sum_k x^k / ((a+1)...(a+k))
        term = total = 1.0 / a
        denominator = a
        while abs(term) > abs(total) * 1e-17:
            denominator += 1
            term *= x / denominator
            total += term
        return min(max(1.0 - math.exp(log_front) * total, 0.0), 1.0)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    fraction = d
    for k in range(1, 10_000):
        an = -k * (k - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        fraction *= delta
        if abs(delta - 1) < 1e-16:
            break
    return min(max(math.exp(log_front) * fraction, 0.0), 1.0)


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift: PSI, its bias and band, KS statistic and p-value.

    ``psi`` is the raw index; ``psi_null`` what it averages with no drift at
    these sample sizes (:func:`psi_null`); ``psi_corrected`` the raw less that,
    floored at 0, the estimate of how far the feature moved. ``psi_pvalue`` is
    the chi-square test of the PSI's own bin counts, ``psi_detectable`` the
    smallest PSI this sample finds on average (:func:`psi_detectable`), and
    ``band`` the :func:`drift_band`. ``drifted`` is the KS verdict alone.
    """

    name: str
    psi: float
    psi_null: float
    psi_corrected: float
    psi_pvalue: float
    psi_detectable: float
    ks_statistic: float
    ks_pvalue: float
    drifted: bool
    band: FeatureBand
    reference_size: int
    current_size: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the row."""
        return {
            "name": self.name,
            "psi": json_float(self.psi),
            "psi_null": json_float(self.psi_null),
            "psi_corrected": json_float(self.psi_corrected),
            "psi_pvalue": json_float(self.psi_pvalue),
            "psi_detectable": json_float(self.psi_detectable),
            "ks_statistic": json_float(self.ks_statistic),
            "ks_pvalue": json_float(self.ks_pvalue),
            "drifted": self.drifted,
            "band": self.band,
            "reference_size": self.reference_size,
            "current_size": self.current_size,
        }


@dataclass(frozen=True)
class DriftReport:
    """Per-feature drift of current data against reference data.

    ``threshold`` is the Bonferroni-corrected p-value below which a feature counts
    as drifted. ``skipped`` names features that one side had no finite value of.
    """

    features: tuple[FeatureDrift, ...]
    alpha: float
    threshold: float
    skipped: tuple[str, ...] = ()

    @property
    def drifted_features(self) -> tuple[str, ...]:
        """Names of the drifted features."""
        return tuple(row.name for row in self.features if row.drifted)

    @property
    def drifted_share(self) -> float:
        """The fraction of tested features that drifted; 0 when none were tested."""
        if not self.features:
            return 0.0
        return len(self.drifted_features) / len(self.features)

    @property
    def drifted(self) -> bool:
        """Whether any feature drifted."""
        return any(row.drifted for row in self.features)

    @property
    def max_psi(self) -> float | None:
        """The largest PSI of any feature, ``None`` when none were tested."""
        return max((row.psi for row in self.features), default=None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, with every feature's row."""
        return {
            "drifted": self.drifted,
            "drifted_share": self.drifted_share,
            "drifted_features": list(self.drifted_features),
            "max_psi": json_float(self.max_psi),
            "alpha": self.alpha,
            "threshold": self.threshold,
            "features": [row.to_dict() for row in self.features],
            "skipped": list(self.skipped),
        }


def feature_drift(
    reference: Mapping[str, np.ndarray],
    current: Mapping[str, np.ndarray],
    alpha: float = 0.05,
) -> DriftReport:
    """PSI and KS of every feature the two sides share, in the reference's order.

    A feature drifted when its KS p-value is below ``alpha / n_features``: the
    Bonferroni correction, which keeps the chance that *any* feature is flagged on
    undrifted data at most ``alpha``. Without it, testing each of 64 features (the
    pixels of the demo digits model) at 0.05 flags at least one on identical
    distributions with probability up to ``1 - 0.95^64``, about 96%, and a gate
    reading "any feature drifted" would roll back almost every canary. Bonferroni is
    conservative when features are correlated, as pixels are.

    Each row's band (:func:`drift_band`) reads the bias-corrected PSI, and only on
    evidence at the same threshold: the KS verdict, or the chi-square test of the
    PSI's own bin counts. The second test is there because KS misses changes of
    shape that PSI sees; it is Pearson's and not PSI's own chi-square tail, which
    on small samples (an empty bin counting as ``eps``) is far heavier than the
    approximation says. See :func:`_row` for the measurements.

    Non-finite values are dropped per feature; a feature left empty on either side
    is listed in ``skipped``. Raises ``ValueError`` when no feature is shared.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1): {alpha}")
    names = [name for name in reference if name in current]
    if not names:
        raise ValueError(
            f"no feature in common: reference has {sorted(reference)[:5]}..., "
            f"current has {sorted(current)[:5]}..."
        )
    samples = {
        name: (_finite(reference[name]), _finite(current[name])) for name in names
    }
    tested = [name for name, (ref, cur) in samples.items() if ref.size and cur.size]
    skipped = tuple(name for name in names if name not in tested)
    threshold = alpha / len(tested) if tested else alpha
    rows = tuple(_row(name, *samples[name], threshold) for name in tested)
    return DriftReport(rows, alpha, threshold, skipped)


def _row(name: str, ref: np.ndarray, cur: np.ndarray, threshold: float) -> FeatureDrift:
    """One feature's row; ``ref`` and ``cur`` finite and non-empty.

    Measured on 64 features of identical distributions against 540 reference
    rows, 200 resamples, the demo's digits pixels (current rows drawn from its
    training split) and standard normals, at 100 current rows:

    - the corrected PSI alone still reads 4.6% and 6.6% of features moderate or
      worse, 3 or 4 of 64; with the evidence rule, 0.07% and 0.11%;
    - PSI's own chi-square tail passes ``0.05 / 64`` on 1.0% and 0.34% of
      features, 13 and 4 times the nominal 0.078%; Pearson's test on the same
      bins on 0.039% and 0.055%.

    And KS alone would miss shapes: a normal feature whose sd grows by 41%
    (PSI 0.145), 300 rows against 540, is found by KS in 27 of 200 resamples, by
    the test on the bins in 167.
    """
    statistic, pvalue = ks_2samp(ref, cur)
    ref_counts, cur_counts = _binned(ref, cur, _PSI_BINS)
    index = _psi_of_counts(ref_counts, cur_counts, _PSI_EPS)
    occupied = int(np.count_nonzero(ref_counts))
    null = psi_null(occupied, ref.size, cur.size)
    corrected = max(index - null, 0.0)
    binned_pvalue = chi_square(ref_counts, cur_counts)[1]
    detectable = psi_detectable(occupied, ref.size, cur.size, threshold)
    drifted = pvalue < threshold
    return FeatureDrift(
        name=name,
        psi=index,
        psi_null=null,
        psi_corrected=corrected,
        psi_pvalue=binned_pvalue,
        psi_detectable=detectable,
        ks_statistic=statistic,
        ks_pvalue=pvalue,
        drifted=drifted,
        band=drift_band(corrected, detectable, drifted or binned_pvalue < threshold),
        reference_size=int(ref.size),
        current_size=int(cur.size),
    )
