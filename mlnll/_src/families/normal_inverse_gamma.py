"""NormalInverseGamma: deep evidential regression (Amini et al. 2020), a real target given the four
parameters of a Normal-Inverse-Gamma prior over its mean and variance; the likelihood is the prior's
Student t marginal."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.families import _location_scale as ls_
from mlnll._src.families import _tails
from mlnll._src.families import student_t as student_t_
from mlnll._src.family import PerExample
from mlnll._src.losses import options as check
from mlnll._src.verify.case import Case, ScipyReference

_NAMES = ("loc", "log_nu", "log_alpha_minus_one", "log_beta")
NormalInverseGammaOutputs: TypeAlias = tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]
NormalInverseGammaOutputArrays: TypeAlias = tuple[jax.Array, jax.Array, jax.Array, jax.Array]
_STUDENT_T = student_t_.StudentT()


def _marginal(log_nu, log_alpha_minus_one, log_beta):
    """``(log_scale, log_df)`` of the Student t marginal and the derivatives the chain rule needs:
    ``log_df = log 2 + log alpha``, ``log_scale = (log_beta + log((1 + nu)/nu) - log alpha) / 2``.

    ``log alpha = log(1 + e^a) = softplus(a)`` and ``log((1 + nu)/nu) = log(1 + e^-n) = softplus(-n)``
    (a = log_alpha_minus_one, n = log_nu), with the derivatives ``sigmoid(a)`` and ``-sigmoid(-n)``.
    """
    # jax.nn.softplus (logaddexp), not numerics.softplus: the latter's derivative at exactly 0 is 0
    # (max(x, 0) and |x| split their ties differently), where it must be 1/2.
    log_alpha = jax.nn.softplus(log_alpha_minus_one)
    log_scale = 0.5 * (log_beta + jax.nn.softplus(-log_nu) - log_alpha)
    return log_scale, numerics.LOG_2 + log_alpha, jax.nn.sigmoid(log_alpha_minus_one), jax.nn.sigmoid(-log_nu)


def _value_and_partials(loc, log_nu, log_alpha_minus_one, log_beta, y):
    """``log p`` (the Student t marginal) and its partials in ``(loc, log_nu, log_alpha_minus_one,
    log_beta, y)``, chained from the Student t's closed-form partials (the class docstring)."""
    log_scale, log_df, sig_a, sig_minus_n = _marginal(log_nu, log_alpha_minus_one, log_beta)
    value, (d_loc, d_ls, d_ldf, d_y) = student_t_._value_and_partials(None, loc, log_scale, log_df, y)
    d_log_nu = -0.5 * sig_minus_n * d_ls
    d_log_alpha_minus_one = sig_a * (d_ldf - 0.5 * d_ls)
    return value, (d_loc, d_log_nu, d_log_alpha_minus_one, 0.5 * d_ls, d_y)


# jax.grad, jacfwd and hessian of log_prob run through the chained closed form (closed_form.py).
normal_inverse_gamma_log_pdf = closed_form(_value_and_partials)


def _tail_value_and_partials(upper: bool, loc, log_nu, log_alpha_minus_one, log_beta, y):
    """``log F(y)`` (or ``log S(y)``) of the Student t marginal and its partials, chained from
    ``StudentT``'s closed-form tail partials through ``_marginal`` as for ``log_prob``."""
    log_scale, log_df, sig_a, sig_minus_n = _marginal(log_nu, log_alpha_minus_one, log_beta)
    value, (d_loc, d_ls, d_ldf, d_y) = student_t_._log_tails_and_partials(None, upper, loc, log_scale, log_df, y)
    return value, (d_loc, -0.5 * sig_minus_n * d_ls, sig_a * (d_ldf - 0.5 * d_ls), 0.5 * d_ls, d_y)


# the marginal's log F and log S, differentiated by the chained partials (closed_form.py)
normal_inverse_gamma_log_tail = closed_form(_tail_value_and_partials, num_static=1)


def _regularized_loss_and_partials(lam: float, loc, log_nu, log_alpha_minus_one, log_beta, y):
    """``-log p + lam |y - loc| (2 nu + alpha)`` and its partials (``NormalInverseGammaOptions``)."""
    value, partials = _value_and_partials(loc, log_nu, log_alpha_minus_one, log_beta, y)
    difference = y - loc
    sign = jnp.sign(difference)  # the subgradient 0 at y = loc
    nu, alpha_minus_one = jnp.exp(log_nu), jnp.exp(log_alpha_minus_one)
    evidence = 2 * nu + (1 + alpha_minus_one)  # 2 nu + alpha, the "virtual observations"
    penalty = lam * (difference * sign)  # lam |y - loc|, |d| = d sign(d)
    d_loc, d_log_nu, d_log_alpha_minus_one, d_log_beta, d_y = partials
    loss = penalty * evidence - value
    return loss, (-d_loc - lam * sign * evidence, penalty * (2 * nu) - d_log_nu,
                  penalty * alpha_minus_one - d_log_alpha_minus_one, -d_log_beta, lam * sign * evidence - d_y)


# NormalInverseGammaOptions' loss, differentiated by its partials (jax.grad runs the closed form).
_regularized_loss = closed_form(_regularized_loss_and_partials, num_static=1)


@dataclasses.dataclass(frozen=True)
class NormalInverseGamma:
    r"""Deep evidential regression: a Normal-Inverse-Gamma prior over a real target's mean and variance.

    outputs: ``(loc, log_nu, log_alpha_minus_one, log_beta)``, so that ``nu = exp(log_nu) > 0``,
    ``alpha = 1 + exp(log_alpha_minus_one) > 1`` and ``beta = exp(log_beta) > 0`` (Amini et al.,
    NeurIPS 2020, with ``gamma`` called ``loc``). targets: reals, broadcastable with the outputs.

    The prior ``sigma^2 ~ InvGamma(alpha, beta)``, ``mu | sigma^2 ~ N(loc, sigma^2 / nu)`` and the
    observation ``y ~ N(mu, sigma^2)`` give, integrated over ``(mu, sigma^2)``, the Student t
    ``y ~ t(df = 2 alpha, loc, scale^2 = beta (1 + nu) / (nu alpha))``: ``log_prob`` is its
    log-density (scipy.stats.t.logpdf), equal to Amini et al.'s
    ``-(1/2) log(pi / nu) + alpha log(Omega) - (alpha + 1/2) log((y - loc)^2 nu + Omega) - log(Gamma(alpha) / Gamma(alpha + 1/2))``
    with ``Omega = 2 beta (1 + nu)``. It is computed as ``StudentT``'s closed form at
    ``log_df = log 2 + softplus(a)`` and ``log_scale = (log_beta + softplus(-n) - softplus(a)) / 2``
    (``a = log_alpha_minus_one``, ``n = log_nu``; ``log alpha = softplus(a)``,
    ``log((1 + nu)/nu) = softplus(-n)``), accurate at any df.

    Gradient, by the chain rule through those maps, with ``P_ls, P_ldf`` the Student t's partials:
    ``d log p/d log_nu = -sigmoid(-n) P_ls / 2``,
    ``d log p/d log_alpha_minus_one = sigmoid(a) (P_ldf - P_ls / 2)``,
    ``d log p/d log_beta = P_ls / 2``; loc's and the target's are the Student t's.
    ``jax.grad`` (and ``jacfwd``, ``hessian``) of ``log_prob`` run through this closed form.

    Fisher information: ``J^T I_t J``, ``I_t`` the Student t's in ``(loc, log_scale, log_df)`` and
    ``J`` the Jacobian of the maps above. It has rank 3: the marginal depends on ``nu`` and
    ``beta`` only through ``beta (1 + nu) / nu``, so the likelihood cannot tell the two apart (a
    direction of zero information). Mean ``loc`` (df = 2 alpha > 2); entropy the Student t's; the
    KL divergence of two t distributions has no closed form (``kl`` raises).

    ``nll(NormalInverseGamma(), evidence_regularizer=lam)`` adds Amini et al.'s regulariser
    ``lam |y - loc| (2 nu + alpha)`` (``NormalInverseGammaOptions``). Known caveats: the NLL alone
    drives the evidence up where the fit is good, and the regulariser only shrinks it where the
    error is large; lam needs tuning per dataset (Amini et al. report 0.01 to 0.1 on their
    benchmarks); and the split of the predictive spread into an "aleatoric" ``beta / (alpha - 1)``
    and an "epistemic" ``beta / (nu (alpha - 1))`` part is a heuristic rather than a property of
    the likelihood, which sees only their Student t marginal (Meinert, Gawlikowski and Lavin, AAAI
    2023, "The Unreasonable Effectiveness of Deep Evidential Regression"), as the rank-3 Fisher
    information says.

    Example:
      >>> import jax.numpy as jnp, mlnll
      >>> zero = jnp.array(0.0)  # nu = 1, alpha = 2, beta = 1: t(df 4, scale 1)
      >>> float(mlnll.NormalInverseGamma().log_prob((zero, zero, zero, zero), zero))
      -0.98082...
    """

    # -- unpacking ---------------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return "NormalInverseGamma"

    def _unpack(self, outputs) -> unpack.Params:
        return unpack.unpack(outputs, family=self._name, names=_NAMES, fixed={})

    def _with_targets(self, outputs, targets) -> tuple[unpack.Params, jax.Array]:
        return unpack.with_targets(self._unpack(outputs), targets, family=self._name)

    def student_t_outputs(self, outputs: NormalInverseGammaOutputs) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(loc, log_scale, log_df)``: the raw outputs of the ``StudentT()`` that is the marginal."""
        p = self._unpack(outputs)
        log_scale, log_df, _, _ = _marginal(p.log_nu, p.log_alpha_minus_one, p.log_beta)
        return p.loc, log_scale, log_df

    # -- the protocol -----------------------------------------------------------------------

    def log_prob(self, outputs: NormalInverseGammaOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example log-density of the Student t marginal, equal to scipy.stats.t.logpdf."""
        p, y = self._with_targets(outputs, targets)
        finite, ys = ls_.finite_targets(y)
        lp = normal_inverse_gamma_log_pdf(p.loc, p.log_nu, p.log_alpha_minus_one, p.log_beta, ys)
        return minus_inf_off_support(lp, finite).astype(p.dtype)

    def grad(self, outputs: NormalInverseGammaOutputs, targets: ArrayLike) -> NormalInverseGammaOutputArrays:
        """Closed form (the class docstring), one array per raw output."""
        p, y = self._with_targets(outputs, targets)
        finite, ys = ls_.finite_targets(y)
        _, partials = _value_and_partials(p.loc, p.log_nu, p.log_alpha_minus_one, p.log_beta, ys)
        grads = ls_.neg_partials(dict(zip(_NAMES, partials[:4])), _NAMES, {}, p.dtype)
        return ls_.nan_off_support(finite, grads)

    def log_cdf(self, outputs: NormalInverseGammaOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log F(y)`` of the Student t marginal (scipy.stats.t.logcdf at df ``2 alpha``,
        scale ``sqrt(beta (1 + nu) / (nu alpha))``): ``StudentT.log_cdf``'s forms, accurate in both
        tails; ``jax.grad`` runs its closed-form partials chained through the marginal's maps (as
        for ``log_prob``: the class docstring)."""
        return self._log_tail(outputs, targets, upper=False)

    def log_survival(self, outputs: NormalInverseGammaOutputs, targets: ArrayLike) -> jax.Array:
        """Per-example ``log S(y) = log(1 - F(y))`` of the Student t marginal (``StudentT.log_survival``)."""
        return self._log_tail(outputs, targets, upper=True)

    def _log_tail(self, outputs, targets, *, upper: bool) -> jax.Array:
        p, y = self._with_targets(outputs, targets)
        finite, ys = ls_.finite_targets(y)
        value = normal_inverse_gamma_log_tail(upper, p.loc, p.log_nu, p.log_alpha_minus_one, p.log_beta, ys)
        return _tails.at_the_ends(value, y, finite, upper).astype(p.dtype)

    def params(self, outputs: NormalInverseGammaOutputs) -> dict[str, jax.Array]:
        """``{"loc", "nu", "alpha", "beta"}``."""
        p = self._unpack(outputs)
        return {"loc": p.loc.astype(p.dtype), "nu": jnp.exp(p.log_nu).astype(p.dtype),
                "alpha": (1 + jnp.exp(p.log_alpha_minus_one)).astype(p.dtype),
                "beta": jnp.exp(p.log_beta).astype(p.dtype)}

    def mean(self, outputs: NormalInverseGammaOutputs) -> jax.Array:
        """``loc`` (the marginal's df = 2 alpha exceeds 2)."""
        p = self._unpack(outputs)
        return p.loc.astype(p.dtype)

    def sample(self, key: jax.Array, outputs: NormalInverseGammaOutputs, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Draws of the target from the Student t marginal, shape ``sample_shape + batch``."""
        p = self._unpack(outputs)
        return _STUDENT_T.sample(key, self.student_t_outputs(outputs), sample_shape=sample_shape).astype(p.dtype)

    def entropy(self, outputs: NormalInverseGammaOutputs) -> jax.Array:
        """The Student t marginal's entropy (``StudentT.entropy``)."""
        p = self._unpack(outputs)
        return _STUDENT_T.entropy(self.student_t_outputs(outputs)).astype(p.dtype)

    def kl(self, outputs_p: NormalInverseGammaOutputs, outputs_q: NormalInverseGammaOutputs) -> jax.Array:
        """Not available: the KL divergence between two t distributions has no closed form."""
        raise NotImplementedError(
            "NormalInverseGamma.kl: the likelihood is a Student t, and the KL divergence between two Student "
            "t distributions has no closed form; estimate it by Monte Carlo over y = sample(key, p)."
        )

    def fisher(self, outputs: NormalInverseGammaOutputs) -> jax.Array:
        """``J^T I_t J`` per example, ``[..., 4, 4]`` (rank 3: the class docstring)."""
        p = self._unpack(outputs)
        loc, log_scale, log_df = self.student_t_outputs(outputs)
        info = _STUDENT_T.fisher((loc, log_scale, log_df)).astype(log_scale.dtype)
        _, _, sig_a, sig_minus_n = _marginal(p.log_nu, p.log_alpha_minus_one, p.log_beta)
        one, zero = jnp.ones_like(sig_a), jnp.zeros_like(sig_a)
        # Rows (loc, log_scale, log_df), columns (loc, log_nu, log_alpha_minus_one, log_beta).
        jac = jnp.stack([jnp.stack([one, zero, zero, zero], -1),
                         jnp.stack([zero, -0.5 * sig_minus_n, -0.5 * sig_a, 0.5 * one], -1),
                         jnp.stack([zero, zero, sig_a, zero], -1)], -2)
        return jnp.einsum("...ki,...kl,...lj->...ij", jac, info, jac).astype(p.dtype)

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the outputs: ``-log(pi)/2``, as for ``StudentT()``."""
        return _STUDENT_T.constant_terms(targets)

    def expectation_nodes(self, outputs: NormalInverseGammaOutputs) -> tuple[jax.Array, jax.Array]:
        """The Student t marginal's rule (``StudentT.expectation_nodes``)."""
        return _STUDENT_T.expectation_nodes(self.student_t_outputs(outputs))

    def loss_options(self, **kwargs: Any) -> NormalInverseGammaOptions:
        """``nll(NormalInverseGamma(), evidence_regularizer=lam)`` (see ``NormalInverseGammaOptions``)."""
        return check.build(NormalInverseGammaOptions, "NormalInverseGamma", kwargs)

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: standard normal raw outputs (df from 2 to ~45), targets from the
        marginal; among the extremes, nu from e^-20 to e^20, df up to 4e4 and log_beta of ±60."""
        return (Case("NormalInverseGamma", cls(), _random, _extreme,
                     scipy=ScipyReference(_scipy_t), plain_log_prob=_plain_log_prob),)


@dataclasses.dataclass(frozen=True)
class NormalInverseGammaOptions:
    r"""The option of ``nll(NormalInverseGamma(), ...)``: ``evidence_regularizer`` (lam, default 0).

    Per example, ``L = -log p(y) + lam |y - loc| (2 nu + alpha)`` (Amini et al. 2020, eq. 9 with
    their ``Phi = 2 nu + alpha``): the error scaled by the total evidence, so that evidence is
    paid for where the prediction is wrong. Gradient of the added term, with ``d = y - loc``:
    ``-lam sign(d) (2 nu + alpha)`` in loc (0 at y = loc), ``2 lam |d| nu`` in log_nu,
    ``lam |d| (alpha - 1)`` in log_alpha_minus_one, 0 in log_beta. ``jax.grad`` of the loss runs
    through these partials (a ``closed_form`` custom_jvp), the same as ``per_example_grad``.
    See ``NormalInverseGamma`` for the known caveats.
    """

    evidence_regularizer: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "evidence_regularizer", check.nonnegative("evidence_regularizer", self.evidence_regularizer))

    def _prepare(self, outputs, targets):
        p, y = NormalInverseGamma()._with_targets(outputs, targets)
        finite, ys = ls_.finite_targets(y)
        return p, ys, finite

    def per_example(self, outputs: NormalInverseGammaOutputs, targets: ArrayLike) -> PerExample:
        """The per-example loss; inf where the target is not finite (NaN derivatives there)."""
        p, ys, finite = self._prepare(outputs, targets)
        loss = _regularized_loss(self.evidence_regularizer, p.loc, p.log_nu, p.log_alpha_minus_one, p.log_beta, ys)
        return PerExample(-minus_inf_off_support(-loss, finite))

    def per_example_grad(self, outputs: NormalInverseGammaOutputs, targets: ArrayLike) -> NormalInverseGammaOutputArrays:
        """Closed-form gradient per example, one array per raw output (NaN where the target is invalid)."""
        p, ys, finite = self._prepare(outputs, targets)
        _, partials = _regularized_loss_and_partials(self.evidence_regularizer, p.loc, p.log_nu, p.log_alpha_minus_one,
                                                     p.log_beta, ys)
        grads = unpack.pack(dict(zip(_NAMES, partials[:4])), _NAMES, {}, p.dtype)
        return ls_.nan_off_support(finite, grads)


# -- check cases ------------------------------------------------------------------------------------


def _plain_log_prob(outputs, y):
    """Amini et al.'s (2020) eq. 8, the textbook form: ``Omega = 2 beta (1 + nu)``, ``log p =
    (1/2) log(nu / pi) + alpha log Omega - (alpha + 1/2) log((y - loc)^2 nu + Omega) + lgamma(alpha + 1/2) - lgamma(alpha)``."""
    loc, log_nu, log_alpha_minus_one, log_beta = outputs
    nu, alpha, beta = jnp.exp(log_nu), 1 + jnp.exp(log_alpha_minus_one), jnp.exp(log_beta)
    omega = 2 * beta * (1 + nu)
    gammaln = jax.scipy.special.gammaln
    return (0.5 * jnp.log(nu / jnp.pi) + alpha * jnp.log(omega) - (alpha + 0.5) * jnp.log((y - loc) ** 2 * nu + omega)
            + gammaln(alpha + 0.5) - gammaln(alpha))


def _scipy_t(outputs):
    import scipy.stats

    loc, log_nu, log_alpha_minus_one, log_beta = (np.asarray(o, np.float64) for o in outputs)
    nu, alpha, beta = np.exp(log_nu), 1 + np.exp(log_alpha_minus_one), np.exp(log_beta)
    return scipy.stats.t(2 * alpha, loc, np.sqrt(beta * (1 + nu) / (nu * alpha)))


def _random(key, dtype, n):
    """Standard normal raw outputs and targets drawn from the marginal (``student_t._standard_t``)."""
    u = ls_.open_uniforms(key, (6, n), dtype)
    loc, log_nu, log_amo, log_beta = (ls_.standard_normal(u[i]) for i in range(4))
    log_scale, log_df, _, _ = _marginal(log_nu, log_amo, log_beta)
    y = loc + jnp.exp(log_scale) * student_t_._standard_t(jnp.exp(log_df), u[4], u[5])
    return (loc, log_nu, log_amo, log_beta), y


def _extreme(dtype):
    """``[6]``: nu from e^-20 to e^8, alpha - 1 from e^-8 to e^10 (df 2 to 4.4e4), log_beta of 60
    and -40 (log-scales of 40 and -20), targets 1e10 away, and raw outputs of exactly 0.

    The location at a log-scale of -20 is 0: the oracle's quadrature nodes ``loc + s t`` must still
    differ from loc in float64 (at loc = 1e4 they would not). Where ``sigmoid(-log_nu)`` or
    ``sigmoid(log_alpha_minus_one)`` is below ~1e-4 the oracle itself fails: the expected Hessian
    holds ``E[score] d^2 map`` terms, 0 exactly but ~1e-16 by quadrature, against entries of the
    size of the sigmoid squared."""
    loc = jnp.asarray(np.array([0.0, 0.0, -5.0, 2.0, 0.0, 1e-3]), dtype)
    log_nu = jnp.asarray(np.array([-20.0, 8.0, 0.0, 5.0, -5.0, 0.0]), dtype)
    log_amo = jnp.asarray(np.array([0.0, -8.0, 10.0, 3.0, -3.0, 0.0]), dtype)
    log_beta = jnp.asarray(np.array([60.0, -40.0, 0.0, 10.0, -10.0, 0.0]), dtype)
    y = jnp.asarray(np.array([1e10, 1e-9, 5.0, 2.0, -1e10, 1e-3]), dtype)
    return (loc, log_nu, log_amo, log_beta), y
