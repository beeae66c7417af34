"""Statistics behind the verifier: is there something to forget, did the child forget it, at what power.

No retrained model exists in production, so every comparison is against data the models never trained on
and every figure carries an interval and the smallest effect its test could have detected (MDE, at the
configured power). The pieces, each usable alone:

- ``memorisation_test``: the user-level statistic (mean over the user's samples of
  ``log p_adapter(gold) - log p_base(gold)``, see ``gold_log_ratio``) against what a user held out of
  training *like this one* shows, giving the p-value of "the adapter memorised this user".  The reference
  is matched to the user (``MatchedReference``, see ``matched_reference`` for the argument): held-out
  users' log-ratios regressed on each sample's ``label_agreement`` (how often the population the adapter
  learned from gave this item this label); ``ReferenceNull`` is the unmatched population reference;
- ``paired_mean_test``: a mean of paired differences on the same samples (bootstrap interval, sign-flip
  p-value, MDE); ``forget_set_change`` applies it to child - parent on the forget set F;
- ``compare_utility``: paired bootstrap of the AUC difference child - parent on a fixed held-out set,
  read as kept / lost / inconclusive against the margin (``UtilityState``);
- ``teacher_movement``: per-sample divergence(child, teacher) - divergence(parent, teacher) on F;
- ``decide``: the verdict class (``Verdict``) with its reasons and all the figures (``Evidence``).

Log-ratios are in nats. Differences of two adapters' log-ratios on the same samples are differences of
their log gold-label probabilities (the base model's term cancels), so ``decide`` needs only log-ratios.
Pure numpy/scipy (``core.ml.metrics`` is reused for ``rank_auc``, ``gold_probability`` and divergences).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from core.ml import metrics
from core.serialization import json_safe

EXACT_SIGN_FLIPS_UP_TO = 12  # 2**12 sign patterns: enumerate them all rather than sample
_BOOTSTRAP_CELLS = 2_000_000  # resample matrices are built in row chunks of at most this many cells


class Verdict(StrEnum):
    """What the evidence supports (see ``decide``)."""

    FORGOTTEN = "forgotten"  # the parent carried the user's signal and the child measurably lost it
    NO_PRIOR_SIGNAL = "no_prior_signal"  # nothing measurable to forget: exclusion + deletion carry it
    INCONCLUSIVE = "inconclusive"  # too few samples for the stated power, or a change not evidenced
    FAILED = "failed"  # signal remains, F raised, over-unlearned or utility lost
    # an exact retrain whose forget set was deleted before unlearning (a deadline, a failed unlearning):
    # forgetting cannot be measured; provenance (trained from the base without the scope) and utility can
    # (``core.ml.verification.verify_exact_retrain``)
    RETRAINED = "retrained"


@dataclass(frozen=True)
class EvidenceConfig:
    """Thresholds of the verifier's statistics.

    ``alpha``: significance level of every test; intervals are two-sided at ``1 - alpha``.
    ``power``: the power at which minimum detectable effects (MDE) are stated.
    ``effect_of_interest``: the smallest memorisation (excess mean log-ratio over held-out users, nats)
    the service promises to see; a parent without signal earns ``no_prior_signal`` only when its test's
    MDE is at most this (0.1 nats: a gold-label probability ~10% higher, relatively, than for an unseen
    user), else the verdict is ``inconclusive``.
    ``utility_margin``: the AUC the child may lose against the parent on the utility set, judged on the
    lower bound of the difference's interval, not on the point.
    ``resamples``: bootstrap rounds, and sign flips when they are sampled rather than enumerated.
    ``divergence``: the ``core.ml.metrics.DIVERGENCES`` entry that measures movement towards the teacher.
    """

    alpha: float = 0.05
    power: float = 0.8
    effect_of_interest: float = 0.1
    utility_margin: float = 0.02
    resamples: int = 2000
    seed: int = 0
    divergence: str = "jensen_shannon"

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not self.alpha < self.power < 1:
            raise ValueError(f"power must be in (alpha, 1), got {self.power}")
        if not self.effect_of_interest > 0:
            raise ValueError(f"effect_of_interest must be > 0, got {self.effect_of_interest}")
        if not self.utility_margin >= 0:
            raise ValueError(f"utility_margin must be >= 0, got {self.utility_margin}")
        if self.resamples < 100:
            raise ValueError(f"resamples must be >= 100, got {self.resamples}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.divergence not in metrics.DIVERGENCES:
            raise ValueError(f"unknown divergence {self.divergence!r}; known: {sorted(metrics.DIVERGENCES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvidenceConfig:
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown EvidenceConfig field(s): {sorted(unknown)}")
        return cls(**raw)


@dataclass(frozen=True)
class Estimate:
    """A figure with its two-sided ``1 - alpha`` interval (NaN bounds where none can be computed)."""

    value: float
    low: float
    high: float


# ----------------------------------------------------------------------------------------- memorisation


@dataclass(frozen=True)
class ReferenceNull:
    """What users held out of training look like, as a one-way random-effects model of their log-ratios:
    ``x[user, sample] = mean + user offset (variance tau^2) + sample noise (variance within_variance)``.

    A version's calibration: compute it once per adapter version (``reference_null``) and store it
    (``to_dict``/``from_dict``). ``means_variance`` is the sample variance of the users' mean log-ratios
    and ``mean_inverse_size`` the mean of 1/(samples per user); together they give tau^2 by moments.
    """

    users: int
    samples: int
    mean: float
    within_variance: float
    means_variance: float
    mean_inverse_size: float

    def __post_init__(self) -> None:
        if self.users < 2:
            raise ValueError(f"a reference needs >= 2 held-out users, got {self.users}")
        if not (self.within_variance >= 0 and self.means_variance >= 0 and self.mean_inverse_size > 0):
            raise ValueError("reference variances must be >= 0 and mean_inverse_size > 0")

    @property
    def user_variance(self) -> float:
        """tau^2: how much held-out users' true mean log-ratios differ from one another (moments, >= 0)."""
        return max(0.0, self.means_variance - self.within_variance * self.mean_inverse_size)

    @property
    def df(self) -> int:
        """Degrees of freedom of the t reference: the number of users less one (conservative)."""
        return self.users - 1

    def null_variance(self, n: int) -> float:
        """Variance of (mean of ``n`` samples of a new held-out user) - ``mean``: the user's offset, its
        sample noise and the uncertainty of the estimated ``mean``."""
        return self.user_variance + self.within_variance / n + self.means_variance / self.users

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ReferenceNull:
        return cls(**raw)


def reference_null(reference_log_ratios_by_user: Sequence[ArrayLike]) -> ReferenceNull:
    """Fit ``ReferenceNull`` to held-out users' per-sample log-ratios (one array per user, any sizes;
    at least two users, and some user with two samples for the within-user spread)."""
    users = [np.asarray(x, dtype=np.float64).ravel() for x in reference_log_ratios_by_user]
    users = [x for x in users if len(x)]
    if len(users) < 2:
        raise ValueError(f"a reference needs >= 2 held-out users with samples, got {len(users)}")
    if not all(np.isfinite(x).all() for x in users):
        raise ValueError("reference log-ratios must be finite")
    sizes = np.array([len(x) for x in users], dtype=np.float64)
    if sizes.max() < 2:
        raise ValueError("a reference needs some user with >= 2 samples to measure the within-user spread")
    means = np.array([x.mean() for x in users])
    within_ss = sum(float(((x - x.mean()) ** 2).sum()) for x in users)
    null = ReferenceNull(
        users=len(users),
        samples=int(sizes.sum()),
        mean=float(means.mean()),
        within_variance=within_ss / float((sizes - 1).sum()),
        means_variance=float(means.var(ddof=1)),
        mean_inverse_size=float((1 / sizes).mean()),
    )
    if null.null_variance(1) <= 0:
        raise ValueError("reference log-ratios have no spread: the null is degenerate")
    return null


AGREEMENT_PRIOR = 5.0  # pseudo-ratings that shrink an item's label rate towards the population's


def label_agreement(
    items: ArrayLike, labels: ArrayLike, population_items: ArrayLike, population_labels: ArrayLike
) -> np.ndarray:
    """Per sample, ``log q(gold)``: the log of the rate at which the population gave the sample's item the
    sample's label (0/1), shrunk towards the population's overall rate by ``AGREEMENT_PRIOR``
    pseudo-ratings (an item the population never rated gets that overall rate).  ``population_*``: the
    items and labels of the samples the adapter learned from, without the user under test."""
    item_arr, label_arr = np.asarray(items).astype(str).ravel(), np.asarray(labels).ravel()
    pop_items = np.asarray(population_items).astype(str).ravel()
    pop_labels = np.asarray(population_labels, dtype=np.float64).ravel()
    if len(item_arr) != len(label_arr) or len(pop_items) != len(pop_labels):
        raise ValueError("items and labels must have the same length")
    overall = float(pop_labels.mean()) if len(pop_labels) else 0.5
    keys, inverse = np.unique(pop_items, return_inverse=True)
    positives = np.bincount(inverse, weights=pop_labels, minlength=len(keys))
    counts = np.bincount(inverse, minlength=len(keys))
    rate = np.full(len(item_arr), overall)
    if len(keys):
        at = np.minimum(np.searchsorted(keys, item_arr), len(keys) - 1)
        seen = keys[at] == item_arr
        rate[seen] = (positives[at[seen]] + AGREEMENT_PRIOR * overall) / (counts[at[seen]] + AGREEMENT_PRIOR)
    gold = np.where(label_arr == 1, rate, 1 - rate)
    return np.asarray(np.log(np.clip(gold, metrics.EPS, 1.0)))


@dataclass(frozen=True)
class MatchedReference:
    """Held-out users' log-ratios given their samples' ``label_agreement`` c: a weighted least-squares line
    ``a + b c`` (each user weighs 1 in all, as ``ReferenceNull`` averages user means), the line's
    covariance clustered by user, and the random-effects null of the residuals (``residuals``).

    ``coefficients`` is ``(a,)`` alone when the held-out samples' agreement has no spread or there are
    only two held-out users (no slope can be estimated: the test is then the population reference).
    ``covariate_range``: the lowest and highest held-out user mean of c; a user outside it is extrapolated
    to, which ``prediction_variance`` prices.
    """

    coefficients: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    residuals: ReferenceNull
    covariate_range: tuple[float, float]

    @property
    def df(self) -> int:
        """Users less the line's parameters."""
        return max(1, self.residuals.users - len(self.coefficients))

    def design(self, mean_covariate: float) -> np.ndarray:
        return np.array([1.0, mean_covariate][: len(self.coefficients)])

    def expected(self, mean_covariate: float) -> float:
        """A never-trained user's expected mean log-ratio at this mean agreement."""
        return float(self.design(mean_covariate) @ np.array(self.coefficients))

    def prediction_variance(self, mean_covariate: float) -> float:
        """Variance of ``expected`` from the line's estimation (grows away from the held-out users)."""
        g = self.design(mean_covariate)
        return float(g @ np.array(self.covariance) @ g)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def matched_reference(
    reference_log_ratios_by_user: Sequence[ArrayLike], reference_covariates_by_user: Sequence[ArrayLike]
) -> MatchedReference:
    """Fit ``MatchedReference`` to held-out users' per-sample log-ratios and ``label_agreement`` (one pair
    of arrays per user, same lengths).

    Why this reference (RMIA/LiRA's point, without reference models): the population reference asks
    whether a user sits above *typical* never-trained users, but a never-trained user who disagrees with
    the population gets low gold-label probabilities from any adapter that learned the population, so a
    memorised atypical user still sits below typical users (the canaries: power 2/7), and a never-trained
    user more typical than most sits above them (a false positive).  What an unseen user would show is,
    first of all, what the population taught the adapter about each of its items: ``label_agreement`` is
    that, computed from the training data without the user, and an adapter that learned nothing but the
    population has ``log p_adapter(gold) ~ log q(gold)``.  Held-out users are never-trained users with
    samples of every agreement, so regressing their log-ratios on it gives what a never-trained user with
    this user's agreement shows; the user's excess over that line is the memorisation.  The alternatives
    need what the service lacks: per-item comparison needs held-out users who rated the same items with
    the same labels (sparse), the base model's own score says what a pretrained model expects, not what
    the population taught the adapter (and says nothing on a random-init model), and LiRA's shadow models
    cost a training each.  The null's variance adds the line's own uncertainty at the user's agreement
    (clustered by user, so users with many samples do not count as many users), so a user unlike any
    held-out user is judged with a wide null (inconclusive), not extrapolated to with false confidence.
    """
    pairs = [
        (np.asarray(x, dtype=np.float64).ravel(), np.asarray(c, dtype=np.float64).ravel())
        for x, c in zip(reference_log_ratios_by_user, reference_covariates_by_user, strict=True)
    ]
    if any(len(x) != len(c) for x, c in pairs):
        raise ValueError("each held-out user needs one covariate per log-ratio")
    pairs = [(x, c) for x, c in pairs if len(x)]
    if not all(np.isfinite(c).all() for _, c in pairs):
        raise ValueError("reference covariates must be finite")
    users = len(pairs)
    if users < 2:
        raise ValueError(f"a reference needs >= 2 held-out users with samples, got {users}")
    x = np.concatenate([x for x, _ in pairs])
    c = np.concatenate([c for _, c in pairs])
    weights = np.concatenate([np.full(len(x), 1.0 / len(x)) for x, _ in pairs])
    owner = np.repeat(np.arange(users), [len(x) for x, _ in pairs])
    spread = float(np.average((c - np.average(c, weights=weights)) ** 2, weights=weights))
    sloped = users >= 3 and spread > 1e-10  # a line needs a spread and a degree of freedom left
    design = np.column_stack([np.ones_like(c), c]) if sloped else np.ones((len(c), 1))
    bread = np.linalg.inv(design.T @ (design * weights[:, None]))
    coefficients = bread @ (design.T @ (weights * x))
    residual = x - design @ coefficients
    # cluster-robust (by user) covariance of the line, with the small-sample factor U / (U - 1): for the
    # intercept alone it is exactly ReferenceNull's variance of the mean (means_variance / users)
    scores = np.zeros((users, design.shape[1]))
    np.add.at(scores, owner, design * (weights * residual)[:, None])
    covariance = users / (users - 1) * bread @ (scores.T @ scores) @ bread
    offsets = np.split(residual, np.cumsum([len(x) for x, _ in pairs])[:-1])
    mean_covariates = [float(c.mean()) for _, c in pairs]
    return MatchedReference(
        coefficients=tuple(float(v) for v in coefficients),
        covariance=tuple(tuple(float(v) for v in row) for row in covariance),
        residuals=reference_null(offsets),
        covariate_range=(min(mean_covariates), max(mean_covariates)),
    )


@dataclass(frozen=True)
class MemorisationTest:
    """One user's memorisation statistic against held-out users.

    ``mean``: the user's mean log-ratio (t interval from its own samples; NaN bounds at n = 1).
    ``reference_mean``: what a held-out user shows (``reference`` "population": held-out users' mean;
    "matched": the ``MatchedReference`` line at the user's mean agreement ``covariate``), with its
    estimation interval.
    ``excess``: ``mean - reference_mean``, the memorisation effect, with an interval that includes a
    held-out user's natural offset (it cannot be told apart from memorisation on one user).
    ``p_value``: one-sided, "the adapter raised this user's gold-label probabilities beyond what an unseen
    user gets"; ``p_value_lower``: the other tail, "below an unseen user" (over-unlearning).
    ``mde``: the excess this one-sided test detects with probability ``power`` at this ``n``.
    """

    n: int
    mean: Estimate
    reference_mean: Estimate
    excess: Estimate
    null_sd: float
    statistic: float
    df: int
    p_value: float
    p_value_lower: float
    mde: float
    reference_users: int
    reference_samples: int
    reference: str = "population"
    covariate: float | None = None


def memorisation_test(
    user_log_ratios: ArrayLike,
    reference_log_ratios_by_user: Sequence[ArrayLike] | ReferenceNull | MatchedReference,
    alpha: float = 0.05,
    power: float = 0.8,
    covariates: ArrayLike | None = None,
) -> MemorisationTest:
    """Test whether an adapter memorised a user, calibrated on users held out of training entirely.

    ``user_log_ratios``: the user's per-sample ``log p_adapter(gold) - log p_base(gold)`` (nats).
    ``reference_log_ratios_by_user``: the same for held-out users, one array per user, scored with the
    same adapter (or their ``ReferenceNull``), or a ``MatchedReference``, which needs the user's
    per-sample ``covariates`` (``label_agreement``). ``alpha``: level of the intervals (two-sided) and of
    the MDE (one-sided); ``power``: the MDE's power.

    Why a standardised statistic and not a resampled null: a held-out user's mean of n samples varies by
    its own offset (tau^2) plus sample noise (sigma^2 / n). Resampling reference users' samples with
    replacement adds each reference user's own sampling noise a second time (over-dispersed, so power is
    lost), and subsampling without replacement needs reference users with at least n samples. The
    random-effects null ``t = (mean - reference mean) / sqrt(tau^2 + sigma^2/n + var(reference mean))``
    with a Student t of (reference users - 1) degrees of freedom is a prediction-interval test, valid at
    any n for roughly normal user means; user means of bounded log-ratios are close to normal from a few
    samples on, and the upper tail of left-skewed log-ratios (gold probability <= 1) is lighter than
    normal, which makes the memorisation p-value conservative rather than liberal. The level holds on
    average over reference draws; for one fixed reference the realised rate scatters around it (simulated,
    20-sample users, alpha 0.05: from 0 to 0.18 with 40 reference users, 0 to 0.07 with 100), so calibrate
    a version on ~100 held-out users or more.
    """
    x = np.asarray(user_log_ratios, dtype=np.float64).ravel()
    if len(x) == 0 or not np.isfinite(x).all():
        raise ValueError("user_log_ratios must be a non-empty array of finite numbers")
    n, mean = len(x), float(x.mean())
    reference = reference_log_ratios_by_user
    covariate: float | None = None
    if isinstance(reference, MatchedReference):
        if covariates is None:
            raise ValueError("a matched reference needs the user's covariates (label_agreement)")
        c = np.asarray(covariates, dtype=np.float64).ravel()
        if len(c) != n or not np.isfinite(c).all():
            raise ValueError(f"covariates must be {n} finite numbers, one per log-ratio, got {len(c)}")
        covariate, null, df, kind = float(c.mean()), reference.residuals, reference.df, "matched"
        expected, estimation = reference.expected(covariate), reference.prediction_variance(covariate)
    else:
        null = reference if isinstance(reference, ReferenceNull) else reference_null(reference)
        expected, estimation, df, kind = null.mean, null.means_variance / null.users, null.df, "population"
    null_sd = math.sqrt(null.user_variance + null.within_variance / n + estimation)
    excess = mean - expected
    statistic = excess / null_sd
    two_sided = float(stats.t.ppf(1 - alpha / 2, df))
    ref_half = two_sided * math.sqrt(estimation)
    return MemorisationTest(
        n=n,
        mean=_t_interval(x, alpha),
        reference_mean=Estimate(expected, expected - ref_half, expected + ref_half),
        excess=Estimate(excess, excess - two_sided * null_sd, excess + two_sided * null_sd),
        null_sd=null_sd,
        statistic=statistic,
        df=df,
        p_value=float(stats.t.sf(statistic, df)),
        p_value_lower=float(stats.t.cdf(statistic, df)),
        mde=float(stats.t.ppf(1 - alpha, df) + stats.t.ppf(power, df)) * null_sd,
        reference_users=null.users,
        reference_samples=null.samples,
        reference=kind,
        covariate=covariate,
    )


def gold_log_ratio(labels: ArrayLike, adapter_probs: ArrayLike, base_probs: ArrayLike) -> np.ndarray:
    """Per-sample ``log p_adapter(gold) - log p_base(gold)`` (nats) from P(positive) of the adapter and of
    the base model on the same samples; probabilities are clipped to ``metrics.EPS`` so logs stay finite."""
    labels_arr = np.asarray(labels)
    adapter = np.clip(metrics.gold_probability(labels_arr, np.asarray(adapter_probs)), metrics.EPS, 1.0)
    base = np.clip(metrics.gold_probability(labels_arr, np.asarray(base_probs)), metrics.EPS, 1.0)
    return np.asarray(np.log(adapter) - np.log(base))


# ---------------------------------------------------------------------------------- paired comparisons


@dataclass(frozen=True)
class PairedTest:
    """Mean of paired differences on the same samples.

    ``mean``: with a percentile bootstrap interval at ``1 - alpha``; ``p_value``: two-sided sign-flip
    permutation test of "no change" (exact up to ``EXACT_SIGN_FLIPS_UP_TO`` samples); ``mde``: the mean
    difference a two-sided paired t test detects with the configured power at this ``n`` (inf at n = 1).
    A change counts as significant only when the interval excludes 0 *and* ``p_value <= alpha``: the
    percentile bootstrap is too narrow on a handful of samples, the sign-flip test is exact (and cannot
    reach p <= 0.05 below 6 samples).
    """

    n: int
    mean: Estimate
    sd: float
    p_value: float
    mde: float
    alpha: float

    @property
    def significantly_negative(self) -> bool:
        return self.mean.high < 0 and self.p_value <= self.alpha

    @property
    def significantly_positive(self) -> bool:
        return self.mean.low > 0 and self.p_value <= self.alpha


def paired_mean_test(differences: ArrayLike, config: EvidenceConfig, stream: int = 0) -> PairedTest:
    """``PairedTest`` of per-sample ``differences`` (e.g. child - parent on the same samples).

    ``config``: alpha, power, resamples and seed; ``stream`` separates the random streams of different
    comparisons made under one seed.
    """
    d = np.asarray(differences, dtype=np.float64).ravel()
    if len(d) == 0 or not np.isfinite(d).all():
        raise ValueError("differences must be a non-empty array of finite numbers")
    rng = np.random.default_rng([config.seed, stream])
    n, alpha = len(d), config.alpha
    sd = float(d.std(ddof=1)) if n > 1 else float("nan")
    if n > 1:
        quantiles = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(config.power, n - 1)
        mde = float(quantiles * sd / math.sqrt(n))
    else:
        mde = float("inf")
    return PairedTest(
        n=n,
        mean=_bootstrap_mean(d, alpha, config.resamples, rng),
        sd=sd,
        p_value=_sign_flip_p_value(d, config.resamples, rng),
        mde=mde,
        alpha=alpha,
    )


def forget_set_change(
    child_log_ratios: ArrayLike, parent_log_ratios: ArrayLike, config: EvidenceConfig
) -> PairedTest:
    """Child - parent mean log gold-label probability on the same forget samples (nats; < 0: the child
    gives the user's true labels less probability than the parent did)."""
    child, parent = _same_length(child_log_ratios, parent_log_ratios, "child and parent forget scores")
    return paired_mean_test(child - parent, config, stream=1)


class UtilityState(StrEnum):
    """What the utility set says about the child's AUC against the parent's, at ``utility_margin``."""

    KEPT = "kept"  # the difference's lower bound is above -margin: any loss is within the margin
    LOST = "lost"  # evidenced and material: the interval is below 0 and the point below -margin
    INCONCLUSIVE = "inconclusive"  # neither: the interval is too wide for the margin at this set's size


@dataclass(frozen=True)
class UtilityComparison:
    """AUCs of parent and child on one fixed held-out set and their difference child - parent, with
    paired bootstrap intervals (the same resampled samples for both); ``mde``: the AUC difference
    detectable with the configured power given the bootstrap standard error; ``state``: kept, lost or
    inconclusive (``UtilityState``); ``samples_needed``: the set size at which, with the same point
    difference, the interval's lower bound would clear ``-utility_margin`` (its half-width scales as
    1 / sqrt(n); inf when the point itself is at or below ``-utility_margin``)."""

    n: int
    positives: int
    parent_auc: Estimate
    child_auc: Estimate
    difference: Estimate
    mde: float
    state: UtilityState = UtilityState.KEPT
    samples_needed: float = 0.0


def compare_utility(
    labels: ArrayLike, parent_probs: ArrayLike, child_probs: ArrayLike, config: EvidenceConfig
) -> UtilityComparison:
    """Paired bootstrap of the AUC difference child - parent on a fixed held-out utility set.

    ``labels``: 0/1 gold labels; ``parent_probs``/``child_probs``: each model's P(positive) on the same
    samples. Point AUCs are ``metrics.rank_auc``; the resamples use the same Mann-Whitney count, weighted
    by resample multiplicities, in one vectorised pass.
    """
    y = np.asarray(labels).astype(bool).ravel()
    parent, child = _same_length(parent_probs, child_probs, "parent and child utility scores")
    if len(y) != len(parent):
        raise ValueError(f"labels ({len(y)}) and scores ({len(parent)}) differ in length")
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise ValueError("the utility set needs both labels for an AUC")
    rng = np.random.default_rng([config.seed, 2])
    parent_reps, child_reps = [], []
    for counts in _resample_counts(len(y), config.resamples, rng):
        parent_reps.append(_weighted_aucs(y, parent, counts))
        child_reps.append(_weighted_aucs(y, child, counts))
    parent_rep, child_rep = np.concatenate(parent_reps), np.concatenate(child_reps)
    parent_auc, child_auc = metrics.rank_auc(y, parent), metrics.rank_auc(y, child)
    diff_rep = child_rep - parent_rep
    z = float(stats.norm.ppf(1 - config.alpha / 2) + stats.norm.ppf(config.power))
    difference = _percentile(child_auc - parent_auc, diff_rep, config.alpha)
    margin, half_width = config.utility_margin, difference.value - difference.low
    if difference.low >= -margin:
        state = UtilityState.KEPT
    elif difference.high < 0 and difference.value < -margin:
        state = UtilityState.LOST
    else:
        state = UtilityState.INCONCLUSIVE
    return UtilityComparison(
        n=len(y),
        positives=positives,
        parent_auc=_percentile(parent_auc, parent_rep, config.alpha),
        child_auc=_percentile(child_auc, child_rep, config.alpha),
        difference=difference,
        mde=z * float(np.nanstd(diff_rep, ddof=1)),
        state=state,
        samples_needed=_samples_needed(len(y), half_width, margin + difference.value),
    )


@dataclass(frozen=True)
class TeacherMovement:
    """How far the child moved from the parent towards the forgetting teacher on F.

    ``change``: per-sample divergence(child, teacher) - divergence(parent, teacher) (< 0: towards the
    teacher); ``parent_to_teacher``/``child_to_teacher``: the mean divergences with bootstrap intervals;
    ``divergence``: which ``metrics.DIVERGENCES`` entry.
    """

    divergence: str
    parent_to_teacher: Estimate
    child_to_teacher: Estimate
    change: PairedTest


def teacher_movement(
    child_probs: ArrayLike, parent_probs: ArrayLike, teacher_probs: ArrayLike, config: EvidenceConfig
) -> TeacherMovement:
    """Movement towards the forgetting teacher on the forget samples, from each model's P(positive)."""
    child, parent = _same_length(child_probs, parent_probs, "child and parent forget probabilities")
    teacher, _ = _same_length(teacher_probs, child, "teacher and child forget probabilities")
    diverge = metrics.DIVERGENCES[config.divergence]  # registered as a mean: apply it sample by sample
    to_teacher = {
        who: np.array([diverge(p[i : i + 1], teacher[i : i + 1]) for i in range(len(p))])
        for who, p in (("child", child), ("parent", parent))
    }
    rng = np.random.default_rng([config.seed, 3])
    return TeacherMovement(
        divergence=config.divergence,
        parent_to_teacher=_bootstrap_mean(to_teacher["parent"], config.alpha, config.resamples, rng),
        child_to_teacher=_bootstrap_mean(to_teacher["child"], config.alpha, config.resamples, rng),
        change=paired_mean_test(to_teacher["child"] - to_teacher["parent"], config, stream=4),
    )


# ------------------------------------------------------------------------------------------------ verdict


@dataclass(frozen=True)
class Evidence:
    """The verdict, why, and every figure it rests on (``to_dict`` is JSON-safe: non-finite -> None)."""

    verdict: Verdict
    reasons: tuple[str, ...]
    parent: MemorisationTest
    child: MemorisationTest
    forget_change: PairedTest
    utility: UtilityComparison
    movement: TeacherMovement | None
    config: EvidenceConfig

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["verdict"] = str(self.verdict)
        return dict(json_safe(raw))


def decide(
    *,
    parent_forget_log_ratios: ArrayLike,
    child_forget_log_ratios: ArrayLike,
    reference: Sequence[ArrayLike] | ReferenceNull | MatchedReference,
    utility_labels: ArrayLike,
    parent_utility_probs: ArrayLike,
    child_utility_probs: ArrayLike,
    config: EvidenceConfig,
    child_reference: Sequence[ArrayLike] | ReferenceNull | MatchedReference | None = None,
    movement: TeacherMovement | None = None,
    forget_covariates: ArrayLike | None = None,
) -> Evidence:
    """The verdict on one erasure from the figures of parent and child.

    ``parent_forget_log_ratios``/``child_forget_log_ratios``: per-sample ``gold_log_ratio`` of each adapter
    on the forget samples (same samples, same order). ``reference``: held-out users' log-ratios under the
    parent (or their ``ReferenceNull``), or their ``MatchedReference``, which needs the forget samples'
    ``label_agreement`` as ``forget_covariates``; ``child_reference``: the same under the child, if scored
    (else the parent's is used: the child is meant to match the parent away from F, which the utility
    check holds). ``utility_*``: the fixed held-out utility set. ``movement``: ``teacher_movement``,
    recorded, not gated.

    Failed, whatever the parent carried, if any of: the child's memorisation p <= alpha (signal remains);
    the child raised F's gold-label probability above the parent's (significant paired increase); the child
    sits below held-out users materially (lower-tail p <= alpha and below by more than
    ``effect_of_interest``: over-unlearned); utility lost (``UtilityState.LOST``: the AUC difference's
    interval below 0 and its point below ``-utility_margin``). Otherwise forgotten when the parent's
    memorisation p <= alpha and the child fell significantly below the parent on F; no_prior_signal when
    the parent's p > alpha and its MDE is at most ``effect_of_interest``; else inconclusive. Each failure
    test runs at ``alpha``: a child that forgot exactly (its F scores like a held-out user's) fails by
    chance at about ``alpha`` through the child's upper memorisation tail, plus what the utility gate adds.

    Two decisions, argued:

    - Utility: a utility set too small for the margin (its interval reaches below ``-utility_margin``
      while the point or the interval's top does not show a loss) says *inconclusive utility*, recorded
      as a reason with the set size the margin needs (``samples_needed``), and does not fail the job; only
      an evidenced, material loss fails. Utility is the operator's concern, not the data subject's: failing
      for noise sent jobs to the exact fallback (a retraining) without any privacy gain, and the
      canaries' 103-207-sample utility sets failed nearly every job that way. The verdict class keeps
      saying what the forgetting evidence supports.
    - "Signal remains" stays strict (significance alone), while over-unlearning must also be material:
      the privacy risk is one-sided. A child that still carries the user, however slightly but
      significantly, is what the service exists to prevent, and its failure costs only the exact
      fallback; a child somewhat below never-trained users harms no one's privacy, and with hundreds of
      samples a deficit of a few hundredths of a nat is significant for users the reference does not
      match well.
    """
    alpha = config.alpha
    parent_f, child_f = _same_length(
        parent_forget_log_ratios, child_forget_log_ratios, "parent and child forget log-ratios"
    )
    parent_null = _fitted(reference)
    child_null = parent_null if child_reference is None else _fitted(child_reference)
    parent = memorisation_test(parent_f, parent_null, alpha, config.power, forget_covariates)
    child = memorisation_test(child_f, child_null, alpha, config.power, forget_covariates)
    change = forget_set_change(child_f, parent_f, config)
    utility = compare_utility(utility_labels, parent_utility_probs, child_utility_probs, config)

    failures = []
    if child.p_value <= alpha:
        failures.append(
            f"signal remains: the child's excess over held-out users {child.excess.value:.4f} nats, "
            f"p = {child.p_value:.4f} <= {alpha}"
        )
    if change.significantly_positive:
        failures.append(
            f"forget set raised: child - parent mean log gold probability {change.mean.value:.4f} "
            f"[{change.mean.low:.4f}, {change.mean.high:.4f}], p = {change.p_value:.4f}"
        )
    # over-unlearning must be material as well as significant: with a few hundred samples a user who is
    # merely atypical (below the population of held-out users by a few hundredths of a nat) would
    # otherwise fail, a property of the user and not of the unlearning
    if child.p_value_lower <= alpha and -child.excess.value > config.effect_of_interest:
        failures.append(
            f"over-unlearned: the child is below held-out users by {-child.excess.value:.4f} nats "
            f"> {config.effect_of_interest}, lower-tail p = {child.p_value_lower:.4f} <= {alpha}"
        )
    auc = utility.difference
    auc_text = f"AUC difference {auc.value:.4f} [{auc.low:.4f}, {auc.high:.4f}]"
    if utility.state == UtilityState.LOST:
        failures.append(f"utility lost: {auc_text} is below 0 and its point below -{config.utility_margin}")

    if failures:
        verdict, reasons = Verdict.FAILED, failures
    elif parent.p_value <= alpha and change.significantly_negative:
        verdict = Verdict.FORGOTTEN
        reasons = [
            f"the parent memorised the user (p = {parent.p_value:.4f}); the child fell below it on F by "
            f"{-change.mean.value:.4f} nats [{-change.mean.high:.4f}, {-change.mean.low:.4f}] "
            f"(p = {change.p_value:.4f}) and is no longer above held-out users (p = {child.p_value:.4f})"
        ]
    elif parent.p_value <= alpha:
        verdict = Verdict.INCONCLUSIVE
        reasons = [
            f"the parent memorised the user (p = {parent.p_value:.4f}) but the child's drop on F is not "
            f"evidenced: {change.mean.value:.4f} [{change.mean.low:.4f}, {change.mean.high:.4f}], "
            f"p = {change.p_value:.4f}"
        ]
    elif parent.mde <= config.effect_of_interest:
        verdict = Verdict.NO_PRIOR_SIGNAL
        reasons = [
            f"no memorisation in the parent (p = {parent.p_value:.4f}) although {parent.n} samples detect "
            f"{parent.mde:.4f} nats <= {config.effect_of_interest} with power {config.power}: nothing "
            "measurable to forget; exclusion and deletion carry the guarantee"
        ]
    else:
        verdict = Verdict.INCONCLUSIVE
        reasons = [
            f"no memorisation seen in the parent (p = {parent.p_value:.4f}), but {parent.n} samples only "
            f"detect {parent.mde:.4f} nats > {config.effect_of_interest} with power {config.power}"
        ]
    if utility.state == UtilityState.INCONCLUSIVE:
        needed = (
            f"about {utility.samples_needed:.0f} needed for this margin"
            if math.isfinite(utility.samples_needed)
            else "the point itself is beyond the margin: a larger set would tell kept from lost"
        )
        reasons.append(
            f"inconclusive utility: {auc_text} reaches below -{config.utility_margin} without evidencing a "
            f"loss; {utility.n} utility samples, {needed}"
        )
    return Evidence(verdict, tuple(reasons), parent, child, change, utility, movement, config)


def _fitted(
    reference: Sequence[ArrayLike] | ReferenceNull | MatchedReference,
) -> ReferenceNull | MatchedReference:
    return reference if isinstance(reference, ReferenceNull | MatchedReference) else reference_null(reference)


# -------------------------------------------------------------------------------------------- internals


def _same_length(a: ArrayLike, b: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"{what} must be non-empty and paired: lengths {len(x)} and {len(y)}")
    return x, y


def _samples_needed(n: int, half_width: float, room: float) -> float:
    """The set size at which a half-width shrinking as 1 / sqrt(n) fits in ``room`` (inf: never)."""
    needed = n * (half_width / room) ** 2 if room > 0 else math.inf
    return float(math.ceil(needed)) if math.isfinite(needed) else math.inf


def _t_interval(x: np.ndarray, alpha: float) -> Estimate:
    mean = float(x.mean())
    if len(x) < 2:
        return Estimate(mean, float("nan"), float("nan"))
    half = float(stats.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Estimate(mean, mean - half, mean + half)


def _percentile(point: float, replicates: np.ndarray, alpha: float) -> Estimate:
    low, high = np.nanquantile(replicates, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(point), float(low), float(high))


def _bootstrap_mean(x: np.ndarray, alpha: float, resamples: int, rng: np.random.Generator) -> Estimate:
    idx = rng.integers(0, len(x), (resamples, len(x)))
    return _percentile(float(x.mean()), x[idx].mean(axis=1), alpha)


def _sign_flip_p_value(d: np.ndarray, resamples: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of "the differences are symmetric about 0" by flipping their signs."""
    observed = abs(float(d.mean()))
    if len(d) <= EXACT_SIGN_FLIPS_UP_TO:
        patterns = np.arange(2 ** len(d))[:, None] >> np.arange(len(d)) & 1
        flipped = np.abs((1 - 2 * patterns) @ d) / len(d)
        return float(np.mean(flipped >= observed * (1 - 1e-12)))
    signs = rng.choice(np.array([-1.0, 1.0]), size=(resamples, len(d)))
    flipped = np.abs(signs @ d) / len(d)
    return float((1 + np.sum(flipped >= observed * (1 - 1e-12))) / (1 + resamples))


def _resample_counts(n: int, resamples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bootstrap resamples of ``n`` samples as multiplicity matrices (rows: resamples), in row chunks."""
    rows = max(1, _BOOTSTRAP_CELLS // n)
    chunks = []
    for start in range(0, resamples, rows):
        b = min(rows, resamples - start)
        idx = rng.integers(0, n, (b, n)) + n * np.arange(b)[:, None]
        chunks.append(np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64))
    return chunks


def _weighted_aucs(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``rank_auc`` of each resample given as multiplicities ``counts`` (rows): the Mann-Whitney count
    of (positive, negative) pairs ordered right, ties one half, with one sort for all resamples."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order]
    w = counts[:, order]
    new_group = np.r_[True, sorted_scores[1:] != sorted_scores[:-1]]
    group = np.cumsum(new_group) - 1
    negatives = np.add.reduceat(w * ~positive, np.flatnonzero(new_group), axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    credit = (below + negatives / 2)[:, group]  # per sample: negatives ranked under it, ties halved
    pos_w = w * positive
    pairs = pos_w.sum(axis=1) * (w.sum(axis=1) - pos_w.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(pairs > 0, (pos_w * credit).sum(axis=1) / pairs, np.nan))
