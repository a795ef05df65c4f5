"""How many seeds a claim needs, and verdicts for several KD rows at once (Holm).

`seeds_needed`: the smallest number of seeds n at which the table's seed-level test (a two-sided paired
t-test at the table's level, standard error sqrt(var_seeds / n + var_images)) calls a true difference
`delta` distinguishable from 0 with the asked power. Assumptions, stated in notebook 05: the per-seed
paired differences are normal with the between-seed variance measured on this run's seeds; the
val-image term (the bootstrap variance of the seed mean, shared by all seeds because they are evaluated
on the same images) stays what it is, so a difference smaller than about 2-3 image standard errors needs
more val images, not more seeds; the t statistic then follows a noncentral t with n - 1 degrees of freedom.

`holm`: Holm's step-down adjustment (Holm, S. "A Simple Sequentially Rejective Multiple Test Procedure."
Scandinavian Journal of Statistics, 1979) of the KD rows' p-values against the baseline, so the chance of
calling any no-effect row distinguishable stays at 1 - level however many rows the table has.
"""

from __future__ import annotations

import math

from scipy import stats


def power(delta: float, var_seeds: float, var_images: float, n: int, level: float = 0.95) -> float:
    """The chance that the two-sided seed-level t-test with n seeds rejects "no difference" when the true
    difference is `delta` (noncentral t, n - 1 degrees of freedom)."""
    se = math.sqrt(var_seeds / n + var_images)
    if n < 2 or se == 0:
        return float("nan")
    crit = stats.t.ppf((1 + level) / 2, n - 1)
    nc = abs(delta) / se
    lower = stats.nct.cdf(-crit, n - 1, nc)  # the wrong-sign tail: tiny for nc > 0 (scipy gives nan there)
    return float(stats.nct.sf(crit, n - 1, nc) + (lower if math.isfinite(lower) else 0.0))


def seeds_needed(
    delta: float, var_seeds: float | None, var_images: float, level: float = 0.95, target: float = 0.8, most: int = 200
) -> int | None:
    """The smallest n >= 2 with power(delta, ..., n) >= target; None when no n up to `most` reaches it (the
    val-image noise alone is too large for this difference) or var_seeds is unknown (one seed)."""
    if var_seeds is None or not math.isfinite(var_seeds) or delta == 0:
        return None
    for n in range(2, most + 1):
        if power(delta, var_seeds, var_images, n, level) >= target:
            return n
    return None


def holm(pvalues: dict, level: float = 0.95) -> dict:
    """{name: (Holm-adjusted p, distinguishable at 1 - level)} for {name: p} of several comparisons."""
    alpha, ordered = 1 - level, sorted(pvalues.items(), key=lambda kv: kv[1])
    m, out, running = len(ordered), {}, 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))  # monotone step-down adjusted p-values
        out[name] = (running, running <= alpha)
    return out
