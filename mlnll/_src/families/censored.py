"""Censored, interval-censored and truncated likelihoods over any family with ``log_cdf`` and
``log_survival``.

What a survival model, a detection limit or a stock-out needs: an observation known only to exceed
y contributes ``log S(y)``, one known only to lie in ``(lower, upper]`` contributes
``log(F(upper) - F(lower))``, and an observation that could only have been recorded inside
``[low, high]`` contributes ``log p(y) - log(F(high) - F(low))``. Each wrapper is a family in its
own right (``nll``, ``checked``, ``check_grad``, the check command, ``jit``/``vmap``/``grad``/
``hessian``); its derivatives run through the wrapped family's closed forms (``log_prob``,
``log_cdf``, ``log_survival``), composed by autodiff.

The mass of an interval is computed in log space from whichever tail is smaller, never as a
difference of two CDFs near 1: ``F(9) - F(8)`` of a standard normal rounds to 0 in the naive form,
while ``S(8) - S(9) = S(8) (1 - S(9)/S(8))`` keeps every digit (``log_interval_mass``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, validate
from mlnll._src.closed_form import minus_inf_off_support
from mlnll._src.family import Outputs, Targets
from mlnll._src.losses import checks
from mlnll._src.verify.case import Case, ScipyReference


# -- shared pieces -------------------------------------------------------------------------------


def log_diff_exp(a: jax.Array, b: jax.Array) -> jax.Array:
    """``log(e^a - e^b)`` for ``a >= b``: ``a + log(1 - e^(b - a))``; ``a`` where b = -inf."""
    gap = jnp.where(jnp.isneginf(b), jnp.inf, a - b)  # b = -inf: e^b = 0, also where a = -inf
    return a + numerics.log1mexp(gap)  # log(1 - e^-(a - b))


def log_interval_mass(family, outputs, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """``log P(lower < Y <= upper) = log(F(upper) - F(lower))`` from the smaller side: as
    ``log F(u) + log(1 - F(l)/F(u))`` where ``F(u) <= S(l)`` (the interval lies towards the left),
    else ``log S(l) + log(1 - S(u)/S(l))``. Both forms are the same number; the chosen one has no
    difference of two numbers near 1. ``lower = -inf`` gives ``log F(upper)``, ``upper = inf``
    gives ``log S(lower)``.

    The smaller tail is evaluated once the side is known, at its bound on the chosen side and at the
    end of the line on the other (``log F(-inf)``, ``log S(inf)``: exact limits with zero
    derivatives): the tail not taken is far out there (``log S(u)`` of an interval towards the
    left), where its partials overflow (``-h z`` at z = 6e36 is inf in float32) and a ``where``
    after it would send ``0 * inf = NaN`` back (the double-where idiom)."""
    log_f_upper, log_s_lower = family.log_cdf(outputs, upper), family.log_survival(outputs, lower)
    from_the_left = log_f_upper <= log_s_lower
    big = jnp.where(from_the_left, log_f_upper, log_s_lower)
    end = jnp.full_like(lower, jnp.inf)
    log_f_lower = family.log_cdf(outputs, jnp.where(from_the_left, lower, -end))
    log_s_upper = family.log_survival(outputs, jnp.where(from_the_left, end, upper))
    small = jnp.where(from_the_left, log_f_lower, log_s_upper)
    return log_diff_exp(big, small)


def _check_tails(wrapper: str, family) -> None:
    if isinstance(family, type):
        raise TypeError(f"{wrapper}: pass a family instance, e.g. mlnll.{wrapper}(mlnll.{family.__name__}()); got the class")
    missing = [name for name in ("log_prob", "log_cdf", "log_survival") if not callable(getattr(family, name, None))]
    if missing:
        raise TypeError(f"{wrapper}: the family must have log_prob, log_cdf and log_survival; "
                        f"{type(family).__name__} lacks {', '.join(missing)}")


def _pair(targets, wrapper: str, names: tuple[str, str]) -> tuple[jax.Array, jax.Array]:
    if not (isinstance(targets, (tuple, list)) and len(targets) == 2):
        raise TypeError(f"{wrapper} targets: expected a tuple ({names[0]}, {names[1]}), got {type(targets).__name__}")
    return jnp.asarray(targets[0]), jnp.asarray(targets[1])


def _per_example_grad(log_prob, outputs, targets):
    """``d(-log_prob)/d outputs`` per example: ``jax.grad`` of the summed values at outputs
    broadcast to the batch shape (the examples are independent, so each gets its own derivative;
    the wrapped families are scalar ones, whose output leaves carry no event axes)."""
    batch = jax.eval_shape(log_prob, outputs, targets).shape
    full = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), batch), outputs)
    return jax.grad(lambda o: -jnp.sum(log_prob(o, targets)))(full)


def _widened(outputs):
    """The outputs in their accumulation dtype (float32 for 16-bit ones: the pieces are combined
    there, not after each has been rounded to bfloat16), and the dtype to return in."""
    leaves = [jnp.asarray(leaf) for leaf in jax.tree.leaves(outputs)]
    dtype = numerics.float_dtype(*leaves)
    acc = numerics.accumulation_dtype(dtype)
    widen = lambda x: x.astype(acc) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
    return jax.tree.map(lambda x: widen(jnp.asarray(x)), outputs), dtype


def _pair_checks(log_prob, outputs, targets, shown_leaf: jax.Array, message: str) -> list[checks.ValueCheck]:
    """``checked()``'s tests for a wrapper with pair targets: non-finite outputs, then examples whose
    log-likelihood is ``-inf`` or NaN (outside the support), shown at ``shown_leaf``."""
    lp = log_prob(outputs, targets)
    bad = jnp.isnan(lp) | (lp == -jnp.inf)
    shown = jnp.broadcast_to(shown_leaf, bad.shape) if shown_leaf.ndim <= bad.ndim else bad
    return [*checks.finite_outputs(outputs), checks.ValueCheck(bad, shown, message, nan_targets=True)]


def _not_implemented(wrapper: str, what: str, why: str) -> NoReturn:
    raise NotImplementedError(f"{wrapper}.{what}: {why}")


class _OverFamily:
    """What the three wrappers share (a mixin for their frozen dataclasses, whose ``family`` field
    is the wrapped family): ``grad`` through the composed closed forms, and the family's ``params``."""

    family: Any

    def log_prob(self, outputs: Outputs, targets: Targets) -> jax.Array:
        raise NotImplementedError  # each wrapper's own

    def grad(self, outputs: Outputs, targets: Targets) -> Outputs:
        """``d(-log_prob)/d outputs`` per example, through the wrapped family's closed forms (NaN off
        the support)."""
        return _per_example_grad(self.log_prob, outputs, targets)

    def params(self, outputs: Outputs) -> dict[str, jax.Array]:
        """The wrapped family's parameters."""
        return self.family.params(outputs)


# -- Censored ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Censored(_OverFamily):
    r"""Right- (or left-) censored observations of any family with ``log_cdf`` and ``log_survival``.

    outputs: what ``family`` takes. targets: a tuple ``(y, observed)``, ``observed`` boolean (or 0/1
    numbers) broadcastable with y: an observed example contributes ``family.log_prob(outputs, y)``,
    a censored one ``family.log_survival(outputs, y)`` (``side="right"``: the value is known to
    exceed y, e.g. a patient still alive at the end of a study) or ``family.log_cdf(outputs, y)``
    (``side="left"``: known to lie below y, e.g. under a detection limit).

    This is the likelihood that lifelines, scipy's ``CensoredData`` and survival regression
    maximise. Dropping the censored rows biases the fit towards short lifetimes; keeping them as
    if observed biases it further.

    Gradient: ``d log L / d outputs`` is the wrapped family's closed-form score for an observed
    example and ``d log S / d outputs = -f / S`` times the derivative of the standardized target
    (the family's ``log_survival`` closed form) for a censored one; ``grad`` and ``jax.grad`` run
    those closed forms. A target outside the family's support (observed or not), or an ``observed``
    other than 0/1, gives ``-inf`` and NaN derivatives for its example.
    """

    family: Any
    side: str = "right"

    def __post_init__(self):
        _check_tails("Censored", self.family)
        if self.side not in ("right", "left"):
            raise ValueError(f"Censored: side must be 'right' or 'left', got {self.side!r}")

    @property
    def _name(self) -> str:
        side = "" if self.side == "right" else f", side={self.side!r}"
        return f"Censored({type(self.family).__name__}(){side})"

    def log_prob(self, outputs: Outputs, targets: Targets) -> jax.Array:
        """Per-example ``log p(y)`` where observed, ``log S(y)`` (or ``log F(y)``) where censored."""
        y, observed = _pair(targets, self._name, ("y", "observed"))
        outputs, dtype = _widened(outputs)
        log_density = self.family.log_prob(outputs, y)
        validate.broadcast_shapes(self._name, [("log_prob of outputs and y", log_density.shape), ("observed", observed.shape)])
        tail = (self.family.log_survival if self.side == "right" else self.family.log_cdf)(outputs, y)
        observed = jnp.broadcast_to(observed, log_density.shape)
        if observed.dtype == jnp.bool_:
            is_observed, valid_flag = observed, jnp.ones_like(observed)
        else:
            is_observed, valid_flag = observed == 1, (observed == 0) | (observed == 1)
        # The support is the family's for both kinds of row: a censored y outside it (a lifetime of
        # -1) is a data error, not a survival probability of 1; it also keeps the unused branch's
        # derivative (NaN off the support) out of the censored rows.
        valid = valid_flag & (log_density > -jnp.inf)
        # minus_inf_off_support sets -inf and NaN derivatives there (the value's own derivatives
        # pass through it, so it gets no where of its own that would stop them)
        return minus_inf_off_support(jnp.where(is_observed, log_density, tail), valid).astype(dtype)

    def mean(self, outputs: Outputs) -> jax.Array:
        """The mean of the uncensored variable (the wrapped family's)."""
        return self.family.mean(outputs)

    def sample(self, key: jax.Array, outputs: Outputs, *, sample_shape: Sequence[int] = ()) -> Targets:
        """``(y, observed)`` with y drawn from the family and every draw observed: the censoring
        mechanism (when a study ends) is not part of the model."""
        y = self.family.sample(key, outputs, sample_shape=sample_shape)
        return y, jnp.ones(y.shape, bool)

    def entropy(self, outputs: Outputs) -> jax.Array:
        _not_implemented(self._name, "entropy", "it depends on the censoring times, which the outputs do not give")

    def kl(self, outputs_p: Outputs, outputs_q: Outputs) -> jax.Array:
        _not_implemented(self._name, "kl", "it depends on the censoring times, which the outputs do not give")

    def fisher(self, outputs: Outputs) -> jax.Array:
        _not_implemented(self._name, "fisher", "the expected information depends on the censoring distribution")

    def value_checks(self, outputs: Outputs, targets: Targets, options: object = None) -> list[checks.ValueCheck]:
        """Non-finite outputs; then targets outside the support (NaN y included), shown at y."""
        y, _ = _pair(targets, self._name, ("y", "observed"))
        return _pair_checks(self.log_prob, outputs, targets, y, "targets: outside the support at flat index {i}: got y = {v}")

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Right-censored log-normal lifetimes (about 40% censored), extremes of LogNormal's row."""
        from mlnll._src.families.log_normal import LogNormal

        base = LogNormal.check_cases()[0]
        base_plain = base.plain_log_prob
        assert base_plain is not None

        def random(key, dtype, n):
            k_base, k_obs = jax.random.split(key)
            outputs, y = base.random(k_base, dtype, n)
            return outputs, (y, jax.random.bernoulli(k_obs, 0.6, (n,)))

        def extreme(dtype):
            outputs, y = base.extreme(dtype)
            return outputs, (y, jnp.arange(y.shape[0]) % 2 == 0)

        def plain(outputs, targets):
            (loc, log_scale), (y, observed) = outputs, targets
            z = (jnp.log(y) - loc) / jnp.exp(log_scale)
            return jnp.where(observed, base_plain(outputs, y), jnp.log(jax.scipy.stats.norm.sf(z)))

        return (Case("Censored(LogNormal())", cls(LogNormal()), random, extreme,
                     scipy=ScipyReference(_scipy_censored_lognorm), plain_log_prob=plain, continuous_targets=False),)


class _ScipyCensored:
    """A frozen scipy law read as a censored one: logpdf of observed rows, logsf of the others."""

    def __init__(self, law):
        self.law = law

    def logpdf(self, targets):
        y, observed = targets
        return np.where(observed, self.law.logpdf(y), self.law.logsf(y))

    def mean(self):
        return self.law.mean()


def _scipy_censored_lognorm(outputs):
    import scipy.stats

    loc, log_scale = outputs
    return _ScipyCensored(scipy.stats.lognorm(np.exp(log_scale), scale=np.exp(loc)))


# -- IntervalCensored ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IntervalCensored(_OverFamily):
    r"""Observations known only to lie in an interval ``(lower, upper]``, of any family with
    ``log_cdf`` and ``log_survival``.

    outputs: what ``family`` takes. targets: a tuple ``(lower, upper)`` broadcastable together;
    ``log_prob = log(F(upper) - F(lower))`` (``log_interval_mass``: from whichever tail is smaller,
    so an interval 8 to 9 standard units out keeps its relative accuracy). ``lower = -inf`` gives
    ``log F(upper)`` (left-censored), ``upper = inf`` gives ``log S(lower)`` (right-censored).
    An empty interval (``lower >= upper``) or a NaN bound is outside the support: ``-inf`` and NaN
    derivatives for that example.

    Gradient: ``d log(F(u) - F(l)) = (dF(u) - dF(l)) / (F(u) - F(l))``, evaluated as the derivative
    of the log-space form, whose pieces are the family's closed-form tail derivatives.

    Accuracy: the value and gradient are relative-accurate to about ``eps |log F| / |log F(u) -
    log F(l)|`` (two rounded tails meet in one difference): an interval as narrow as 1e-3 of the
    scale keeps about three digits fewer than a wide one. For a reading rounded to a fine grid, the
    family's ``log_prob`` at the reading plus the log of the width is the better likelihood.
    """

    family: Any

    def __post_init__(self):
        _check_tails("IntervalCensored", self.family)

    @property
    def _name(self) -> str:
        return f"IntervalCensored({type(self.family).__name__}())"

    def log_prob(self, outputs: Outputs, targets: Targets) -> jax.Array:
        """Per-example ``log P(lower < Y <= upper)``."""
        lower, upper = _pair(targets, self._name, ("lower", "upper"))
        validate.broadcast_shapes(self._name, [("lower", lower.shape), ("upper", upper.shape)])
        lower, upper = jnp.broadcast_arrays(lower, upper)
        outputs, dtype = _widened(outputs)
        valid = lower < upper  # False for NaN too
        # An empty interval's "mass" is the log of a negative number (NaN), with NaN derivatives:
        # minus_inf_off_support turns the value into -inf and keeps those derivatives NaN.
        mass = log_interval_mass(self.family, outputs, lower, upper)
        # Where both bounds sit at one end of the line (lower = upper = inf) every tail is a
        # constant, so the NaN derivative would meet no dependence on the outputs: 0 times the sum of
        # the outputs ties it to them (value unchanged, derivative 0 * d outputs, then NaN).
        anchor = sum(jnp.broadcast_to(jnp.asarray(leaf), mass.shape) for leaf in jax.tree.leaves(outputs))
        mass = mass + jnp.zeros_like(mass) * anchor
        return minus_inf_off_support(mass, jnp.broadcast_to(valid, mass.shape)).astype(dtype)

    def mean(self, outputs: Outputs) -> jax.Array:
        """The mean of the latent variable (the wrapped family's)."""
        return self.family.mean(outputs)

    def sample(self, key: jax.Array, outputs: Outputs, *, sample_shape: Sequence[int] = ()) -> Targets:
        """``(floor(y), floor(y) + 1)`` around a draw y of the family: the unit-width interval
        holding it, as a rounded measurement (an integer reading) records it."""
        y = self.family.sample(key, outputs, sample_shape=sample_shape)
        low = jnp.floor(y)
        return low, low + 1

    def entropy(self, outputs: Outputs) -> jax.Array:
        _not_implemented(self._name, "entropy", "it depends on the intervals, which the outputs do not give")

    def kl(self, outputs_p: Outputs, outputs_q: Outputs) -> jax.Array:
        _not_implemented(self._name, "kl", "it depends on the intervals, which the outputs do not give")

    def fisher(self, outputs: Outputs) -> jax.Array:
        _not_implemented(self._name, "fisher", "the expected information depends on how the intervals are drawn")

    def value_checks(self, outputs: Outputs, targets: Targets, options: object = None) -> list[checks.ValueCheck]:
        """Non-finite outputs; then empty intervals or NaN bounds (shown at the lower bound)."""
        lower, _ = _pair(targets, self._name, ("lower", "upper"))
        return _pair_checks(self.log_prob, outputs, targets, lower, "targets: an empty or NaN interval at flat index {i}: lower = {v}")

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """Normal intervals of random width around Normal's random targets (and one-sided ones),
        and intervals far in both tails among the extremes."""
        from mlnll._src.families.normal import Normal

        base = Normal.check_cases()[0]

        def random(key, dtype, n):
            k_base, k_width, k_side = jax.random.split(key, 3)
            (loc, log_scale), y = base.random(k_base, dtype, n)
            width = jnp.exp(log_scale) * jax.random.uniform(k_width, (n,), dtype, 0.05, 2.0)
            side = jax.random.randint(k_side, (n,), 0, 6)  # 1 in 6 open below, 1 in 6 open above
            lower = jnp.where(side == 0, -jnp.inf, y - width)
            upper = jnp.where(side == 1, jnp.inf, y + width)
            return (loc, log_scale), (lower.astype(dtype), upper.astype(dtype))

        def extreme(dtype):
            loc = jnp.array([0.0, 0.0, 1e4, 0.0, 0.0], dtype)
            log_scale = jnp.array([0.0, 0.0, 2.0, -30.0, 0.0], dtype)
            lower = jnp.array([8.0, -9.0, 1e4 - 1.0, -1e-13, -jnp.inf], dtype)
            upper = jnp.array([9.0, -8.0, 1e4 + 1e-3, 1e-13, -30.0], dtype)
            return (loc, log_scale), (lower, upper)

        def plain(outputs, targets):
            (loc, log_scale), (lower, upper) = outputs, targets

            def cdf(t):  # 0 and 1 at the infinite bounds, with zero derivatives (double where)
                finite = jnp.isfinite(t)
                inside = jax.scipy.stats.norm.cdf(jnp.where(finite, t, 0.0), loc, jnp.exp(log_scale))
                return jnp.where(finite, inside, jnp.where(t > 0, 1.0, 0.0).astype(inside.dtype))

            return jnp.log(cdf(upper) - cdf(lower))

        return (Case("IntervalCensored(Normal())", cls(Normal()), random, extreme,
                     scipy=ScipyReference(_scipy_interval_norm), plain_log_prob=plain, continuous_targets=False),)


class _ScipyInterval:
    """A frozen scipy law's interval masses, each from the smaller side (scipy's sf is accurate)."""

    def __init__(self, law):
        self.law = law

    def logpdf(self, targets):
        lower, upper = targets
        left = self.law.cdf(upper) - self.law.cdf(lower)
        right = self.law.sf(lower) - self.law.sf(upper)
        return np.log(np.where(self.law.cdf(upper) <= self.law.sf(lower), left, right))

    def mean(self):
        return self.law.mean()


def _scipy_interval_norm(outputs):
    import scipy.stats

    loc, log_scale = outputs
    return _ScipyInterval(scipy.stats.norm(loc, np.exp(log_scale)))


# -- Truncated -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Truncated(_OverFamily):
    r"""Any family with ``log_cdf`` and ``log_survival``, truncated to ``[low, high]``.

    outputs: what ``family`` takes; targets: as the family's. ``low=None`` is ``-inf`` and
    ``high=None`` is ``+inf``. ``log_prob(y) = family.log_prob(y) - log(F(high) - F(low))`` for
    ``low <= y <= high`` (the normaliser by ``log_interval_mass``, from the smaller tail: a window
    8 to 9 standard units out gives the exact ``log p - log(S(8) - S(9))``, where the naive
    ``F(9) - F(8)`` rounds to 0 and the loss to inf); targets outside give ``-inf`` and NaN
    derivatives.

    Gradient: the family's closed-form score minus ``d log(F(high) - F(low)) / d outputs``, the
    latter from the closed-form tail derivatives.

    Accuracy: the normaliser is relative-accurate to about ``eps |log F| / |log F(high) -
    log F(low)|`` (``IntervalCensored`` says why): a window narrower than about ``1e-15`` of the scale
    in float64 (``1e-6`` in float32) has a normaliser that rounds to 0, and the loss is inf.
    """

    family: Any
    low: float | None = None
    high: float | None = None

    def __post_init__(self):
        _check_tails("Truncated", self.family)
        for name in ("low", "high"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)):
                raise TypeError(f"Truncated: {name} must be a number or None, got {value!r}")
        low = -math.inf if self.low is None else self.low
        high = math.inf if self.high is None else self.high
        if not low < high:
            raise ValueError(f"Truncated: low must be below high, got low={self.low}, high={self.high}")

    @property
    def _name(self) -> str:
        return f"Truncated({type(self.family).__name__}(), low={self.low}, high={self.high})"

    def _log_normaliser(self, outputs, like: jax.Array) -> jax.Array:
        low = jnp.full_like(like, -jnp.inf if self.low is None else self.low)
        high = jnp.full_like(like, jnp.inf if self.high is None else self.high)
        return log_interval_mass(self.family, outputs, low, high)

    def log_prob(self, outputs: Outputs, targets: Targets) -> jax.Array:
        """Per-example ``log p(y) - log(F(high) - F(low))`` inside the window, ``-inf`` outside."""
        outputs, dtype = _widened(outputs)
        log_density = self.family.log_prob(outputs, targets)
        y = jnp.broadcast_to(jnp.asarray(targets), log_density.shape)
        inside = jnp.ones(y.shape, bool)
        if self.low is not None:
            inside = inside & (y >= self.low)
        if self.high is not None:
            inside = inside & (y <= self.high)
        inside = inside & (log_density > -jnp.inf)
        return minus_inf_off_support(log_density - self._log_normaliser(outputs, log_density), inside).astype(dtype)

    def mean(self, outputs: Outputs) -> jax.Array:
        _not_implemented(self._name, "mean", "it needs the family's partial moments, which mlnll does not compute yet")

    def sample(self, key: jax.Array, outputs: Outputs, *, sample_shape: Sequence[int] = ()) -> Targets:
        _not_implemented(self._name, "sample", "it needs the family's quantile function, which mlnll does not have yet")

    def entropy(self, outputs: Outputs) -> jax.Array:
        _not_implemented(self._name, "entropy", "it needs the family's partial moments, which mlnll does not compute yet")

    def kl(self, outputs_p: Outputs, outputs_q: Outputs) -> jax.Array:
        _not_implemented(self._name, "kl", "it needs the family's partial moments, which mlnll does not compute yet")

    def fisher(self, outputs: Outputs) -> jax.Array:
        _not_implemented(self._name, "fisher", "it needs the family's partial moments, which mlnll does not compute yet")

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """A Normal truncated to [-1, 2] (scipy's truncnorm), targets drawn inside the window."""
        from mlnll._src.families.normal import Normal

        def random(key, dtype, n):
            kl, ks, ky = jax.random.split(key, 3)
            loc = jax.random.normal(kl, (n,), dtype)
            log_scale = 0.7 * jax.random.normal(ks, (n,), dtype)
            y = jax.random.uniform(ky, (n,), dtype, -1.0, 2.0)
            return (loc, log_scale), y

        def extreme(dtype):
            # the window [-1, 2] 8 to 10.4 standard units to the right of loc, 60 to 63 to its left,
            # at a scale of e^-40 (mass 1) and of e^5 (a window 0.02 standard units wide)
            loc = jnp.array([-11.0, 62.0, 0.5, 0.0], dtype)
            log_scale = jnp.array([math.log(1.25), 0.0, -40.0, 5.0], dtype)
            y = jnp.array([1.5, 0.0, 0.5, 1.9], dtype)
            return (loc, log_scale), y

        def plain(outputs, y):
            loc, log_scale = outputs
            scale = jnp.exp(log_scale)
            norm = jax.scipy.stats.norm
            return norm.logpdf(y, loc, scale) - jnp.log(norm.cdf(2.0, loc, scale) - norm.cdf(-1.0, loc, scale))

        return (Case("Truncated(Normal(), low=-1.0, high=2.0)", cls(Normal(), low=-1.0, high=2.0), random, extreme,
                     scipy=ScipyReference(_scipy_truncnorm), plain_log_prob=plain),)


def _scipy_truncnorm(outputs):
    import scipy.stats

    loc, log_scale = outputs
    scale = np.exp(log_scale)
    return scipy.stats.truncnorm((-1.0 - loc) / scale, (2.0 - loc) / scale, loc=loc, scale=scale)
