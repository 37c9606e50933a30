"""The two-sample Kolmogorov-Smirnov test, two-sided, without scipy.

:func:`ks_2samp` gives the same statistic and p-value as
``scipy.stats.ks_2samp(a, b)`` with its defaults (``method="auto"``), to within
1e-13 in the tests: scipy is a development dependency only, and the Validator runs
this test on every feature of every comparison.

How the p-value is found, following scipy's choices so both agree:

- Both samples of at most 10,000 values: the exact distribution of the statistic
  under the null, by counting lattice paths (Hodges 1958). Equal sizes use the
  closed form of the paths that leave the band ``|x - y| < h``; unequal sizes walk
  the band column by column with the recursion for ``1 - p`` of Viehmann (2021,
  arXiv:2102.08037), which stays accurate for tiny p-values.
- Larger samples: the one-sample Kolmogorov distribution ``P(D_n >= d)`` at
  ``n = round(m n / (m + n))``, computed as Simard and L'Ecuyer (2011) prescribe:
  Ruben-Gambino closed forms at the extremes, the Durbin matrix (Marsaglia, Tsang
  and Wang 2003) for small ``n d^2``, the Pelz-Good asymptotic series where that
  would be slow, and twice the exact one-sided Smirnov tail (Birnbaum-Tingey) in
  the upper tail.

Cost: equal sizes and the asymptotic regime take well under a millisecond at a
few hundred values. Unequal exact sizes walk ``max(m, n)`` columns of the band,
one vectorized step each: about 7 ms for 500 against 540 values, 0.1 s for 5,000
against 7,000 (scipy's compiled walk is 10 to 15 times faster).

Where scipy, for equal sizes, can round an exact p-value of 1 to slightly above
one and then fall back to the asymptotic formula with a warning, this clips to 1;
both answers are 1 to within rounding.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["kolmogorov_sf", "ks_2samp", "smirnov_sf"]

# scipy's method="auto" is exact when both samples have at most this many values.
_MAX_EXACT_N = 10_000
# Products of column weights are cut into blocks before they drop below this, so
# 1 / product stays far from overflow.
_TINY = 1e-280
# log of the smallest positive normal double: exp() of less underflows.
_MIN_LOG = -708.3964185322641


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(statistic, pvalue)`` of the two-sided two-sample KS test of ``a``, ``b``.

    Both must be non-empty; ties are fine. A NaN anywhere gives ``(nan, nan)``, as
    scipy's default ``nan_policy="propagate"`` does.
    """
    x = np.sort(np.asarray(a, dtype=np.float64).ravel())
    y = np.sort(np.asarray(b, dtype=np.float64).ravel())
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("ks_2samp needs two non-empty samples")
    if np.isnan(x[-1]) or np.isnan(y[-1]):  # sort puts NaN last
        return math.nan, math.nan
    both = np.concatenate([x, y])
    # searchsorted on the right counts ties on both sides alike.
    gap = np.searchsorted(x, both, side="right") / n1
    gap -= np.searchsorted(y, both, side="right") / n2
    d = float(max(gap.max(), -gap.min(), 0.0))
    if max(n1, n2) <= _MAX_EXACT_N:
        return _exact(n1, n2, d)
    big, small = max(n1, n2), min(n1, n2)
    effective = round(big * small / (big + small))
    return d, kolmogorov_sf(effective, d)


def _exact(n1: int, n2: int, d: float) -> tuple[float, float]:
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    # The statistic is a multiple of 1 / lcm; rounding removes float noise.
    h = round(d * lcm)
    d = h / lcm
    if h == 0:
        return d, 1.0
    p = _outside_square(n1, h) if n1 == n2 else _outside_band(n1, n2, g, h)
    return d, min(max(p, 0.0), 1.0)


def _outside_square(n: int, h: int) -> float:
    """``P(D >= h / n)`` for two samples of ``n``: paths leaving ``|x - y| < h``.

    The reflection principle gives ``2 * sum_k (-1)^(k+1) C(2n, n - k h) / C(2n,
    n)``; written as nested products ``A0 (1 - A1 (1 - A2 (...)))`` it has no
    cancellation and no huge binomials.
    """
    ks = np.arange(n // h, -1, -1)[:, None]
    j = np.arange(h)[None, :]
    ratios = np.prod((n - ks * h - j) / (n + ks * h + j + 1.0), axis=1)
    total = 0.0
    for ratio in ratios:
        total = float(ratio) * (1.0 - total)
    return 2.0 * total


def _outside_band(m: int, n: int, g: int, h: int) -> float:
    """``P(D >= h / lcm)`` for samples of ``m != n``, by walking the lattice.

    Column ``i`` (``i`` values of the larger sample seen) holds, for each ``j``
    inside the band ``|n i - m j| < h g``, the probability that a random path
    reaching ``(i, j)`` has already left the band; cells outside count as 1. Each
    cell is ``(i * left + j * below) / (i + j)``.
    """
    if m < n:
        m, n = n, m
    mg, ng = m // g, n // g
    lo, hi = 0, min(-(-h // mg), n + 1)
    column = np.zeros(hi - lo)
    for i in range(1, m + 1):
        new_lo = min(max((ng * i - h) // mg + 1, 0), n)
        new_hi = min(-(-(ng * i + h) // mg), n + 1)
        if new_hi <= new_lo:
            return 1.0
        overlap = min(new_hi, hi)
        if overlap > new_lo:
            left = column[new_lo - lo : overlap - lo]
            if new_hi > overlap:
                left = np.concatenate([left, np.ones(new_hi - overlap)])
        else:
            left = np.ones(new_hi - new_lo)
        below = 0.0 if new_lo == 0 else 1.0
        column = _column(left, i, new_lo, below)
        lo, hi = new_lo, new_hi
    return float(column[-1])


def _column(left: np.ndarray, i: int, lo: int, below: float) -> np.ndarray:
    """Solve ``v[j] = (i * left[j] + j * v[j - 1]) / (i + j)`` up the column.

    A first-order linear recurrence ``v[j] = b[j] v[j-1] + c[j]`` with ``0 <= b <
    1``: ``v[j] = P[j] (v0 + sum c[k] / P[k])`` with ``P`` the running product of
    ``b``, in blocks short enough that ``P`` never underflows.
    """
    j = np.arange(lo, lo + left.size, dtype=np.float64)
    total = i + j
    weight = j / total
    own = left * i / total
    blocks = []
    if lo == 0:  # weight 0: the bottom cell only sees its left neighbour
        blocks.append(own[:1])
        below = float(own[0])
        weight, own = weight[1:], own[1:]
    while own.size:
        products = np.cumprod(weight)
        end = own.size
        if products[-1] < _TINY:
            end = max(1, int(np.searchsorted(-products, -_TINY, side="right")))
            products = products[:end]
        block = products * (below + np.cumsum(own[:end] / products))
        blocks.append(block)
        below = float(block[-1])
        weight, own = weight[end:], own[end:]
    return np.concatenate(blocks)


def kolmogorov_sf(n: int, x: float) -> float:
    """``P(D_n >= x)`` for the two-sided one-sample KS statistic of ``n`` values.

    Equal to ``scipy.stats.kstwo.sf(x, n)``; the method for each region is the one
    Simard and L'Ecuyer (2011) choose.
    """
    if n < 1:
        raise ValueError(f"n must be a positive integer: {n}")
    t = n * x
    if t <= 0.5:
        return 1.0
    if x >= 1.0:
        return 0.0
    if t <= 1.0:
        # Ruben-Gambino: P(D_n < x) = n! / n^n (2t - 1)^n for 1/2n <= x <= 1/n.
        cdf = math.exp(_log_factorial_over_power(n) + n * math.log(2 * t - 1))
        return _clip(1.0 - cdf)
    if t >= n - 1:
        return _clip(2.0 * (1.0 - x) ** n)
    if x >= 0.5:
        # Above 1/2 the two one-sided tails cannot both be crossed.
        return _clip(2.0 * smirnov_sf(n, x))
    nxx = t * x
    if n <= 140:
        if nxx <= 4:
            # Both exact; the Durbin matrix is small here (at most 47 wide).
            return _clip(1.0 - _durbin_cdf(n, x))
        return _clip(2.0 * smirnov_sf(n, x))
    if nxx >= 370:
        return 0.0
    if nxx >= 2.2:
        return _clip(2.0 * smirnov_sf(n, x))
    if n <= 100_000 and n * x**1.5 <= 1.4:
        return _clip(1.0 - _durbin_cdf(n, x))
    return _clip(1.0 - _pelz_good_cdf(n, x))


def _clip(p: float) -> float:
    return min(max(p, 0.0), 1.0)


def _log_factorial_over_power(n: int) -> float:
    """``log(n! / n^n)``, summed exactly from its ``n`` terms ``log(i / n)``."""
    return math.fsum(np.log(np.arange(1, n + 1) / n).tolist())


def _durbin_cdf(n: int, x: float) -> float:
    """``P(D_n < x)`` by Durbin's matrix: an entry of ``H^n`` times ``n!/n^n``.

    Powers of two keep ``H^n`` in range; they are tracked as exponents and
    applied with the factorial term in logs at the end.
    """
    k = math.ceil(n * x)
    h = k - n * x
    m = 2 * k - 1
    inverse_factorials = np.array([1.0 / math.factorial(q) for q in range(m + 1)])
    rows = np.arange(m)[:, None]
    cols = np.arange(m)[None, :]
    steps = rows - cols + 1
    matrix = np.where(steps >= 0, inverse_factorials[np.clip(steps, 0, m)], 0.0)
    edge = (1.0 - h ** np.arange(1, m + 1)) * inverse_factorials[1:]
    matrix[:, 0] = edge
    matrix[m - 1, :] = edge[::-1]
    matrix[m - 1, 0] = (1.0 - 2 * h**m + max(0.0, 2 * h - 1) ** m) * (
        inverse_factorials[m]
    )
    result, result_exp = np.eye(m), 0
    power, power_exp = matrix, 0
    remaining = n
    while remaining:
        if remaining & 1:
            result, shift = _rescaled(result @ power)
            result_exp += power_exp + shift
        remaining >>= 1
        if remaining:
            power, shift = _rescaled(power @ power)
            power_exp = 2 * power_exp + shift
    entry = float(result[k - 1, k - 1])
    if entry <= 0:
        return 0.0
    log_p = math.log(entry) + result_exp * math.log(2) + _log_factorial_over_power(n)
    return _clip(math.exp(log_p))


def _rescaled(matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """``matrix`` divided by a power of two near its largest entry (exact)."""
    top = float(np.abs(matrix).max())
    if top == 0:
        return matrix, 0
    shift = math.frexp(top)[1]
    return np.ldexp(matrix, -shift), shift


def _pelz_good_cdf(n: int, x: float) -> float:
    """The Pelz-Good (1976) series for ``P(D_n < x)``, to order ``n^(-3/2)``.

    ``K0 + K1 / sqrt(n) + K2 / n + K3 / n^1.5`` with ``z = x sqrt(n)``, each
    ``K`` a theta-function sum over odd ``m`` (weights ``exp(-m^2 pi^2 / 8z^2)``)
    and, for ``K2`` and ``K3``, over all ``k`` (weights ``exp(-k^2 pi^2 / 2z^2)``).
    ``16 z / pi`` terms leave nothing a double can hold.
    """
    z = math.sqrt(n) * x
    if -(math.pi**2) / (8 * z * z) < _MIN_LOG:
        return 0.0
    pi2 = math.pi**2
    terms = math.ceil(16 * z / math.pi)
    m2 = (2 * np.arange(1, terms + 1, dtype=np.float64) - 1) ** 2
    odd = np.exp(-m2 * pi2 / (8 * z**2))
    k2 = np.arange(1, terms + 1, dtype=np.float64) ** 2
    every = k2 * np.exp(-k2 * pi2 / (2 * z**2))
    root = math.sqrt(2 * math.pi)
    first = root / z * float(odd.sum())
    second = root / (6 * z**4) * float((pi2 / 4 * m2 - z**2) @ odd)
    third_poly = (
        6 * z**6
        + 2 * z**4
        + pi2 * (2 * z**4 - 5 * z**2) / 4 * m2
        + pi2**2 * (1 - 2 * z**2) / 16 * m2**2
    )
    third = root / (72 * z**7) * float(third_poly @ odd)
    third -= pi2 * root / (36 * z**3) * float(every.sum())
    fourth_poly = (
        -30 * z**6
        - 90 * z**8
        + pi2 * (135 * z**4 - 96 * z**6) / 4 * m2
        + pi2**2 * (212 * z**4 - 60 * z**2) / 16 * m2**2
        + pi2**3 * (5 - 30 * z**2) / 64 * m2**3
    )
    fourth = root / (6480 * z**10) * float(fourth_poly @ odd)
    fourth += pi2 * root / (216 * z**6) * float((3 * z**2 - pi2 * k2) @ every)
    root_n = math.sqrt(n)
    return first + second / root_n + third / n + fourth / (n * root_n)


def smirnov_sf(n: int, x: float) -> float:
    """``P(D+_n >= x)``: the exact one-sided KS tail (Birnbaum-Tingey sum).

    ``x * sum_{v <= n(1-x)} C(n, v) (x + v/n)^(v-1) (1 - x - v/n)^(n-v)``, summed
    in logs at extended precision. Equal to ``scipy.special.smirnov(n, x)``.
    """
    if x <= 0:
        return 1.0
    if x >= 1:
        return 0.0
    if n == 1:
        return 1.0 - x
    if n * x <= 1:
        return _clip(1.0 - x * (1.0 + x) ** (n - 1))
    if -2 * n * x * x < _MIN_LOG:
        return 0.0
    if math.floor(n * x) >= n - 1:
        return (1.0 - x) ** n
    if n > 1_000_000:
        # scipy's approximation where the exact sum would take too long.
        return math.exp(-((6 * n * x + 1) ** 2) / (18 * n))
    last = math.floor(n * (1 - x))
    v = np.arange(last + 1, dtype=np.longdouble)
    log_binomial = np.concatenate(
        [[np.longdouble(0)], np.cumsum(np.log((n - v[:-1]) / (v[:-1] + 1)))]
    )
    rise = x + v / n
    # Rounding can take the last term's base a hair below its true value, 0.
    fall = np.maximum(1 - x - v / n, 0)
    with np.errstate(divide="ignore"):  # 0^(n - v) = 0: log -inf, exp 0
        log_terms = log_binomial + (v - 1) * np.log(rise) + (n - v) * np.log(fall)
    return _clip(float(x * np.exp(log_terms).sum()))
