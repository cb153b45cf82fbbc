"""PlackettLuce: a ranking of K items (a permutation, best first) from one score per item."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from mlnll._src import numerics, unpack, validate
from mlnll._src.closed_form import closed_form, minus_inf_off_support
from mlnll._src.verify import draws
from mlnll._src.verify.case import Case

_NAMES = ("scores",)
_FAMILY = "PlackettLuce"
# expectation_nodes enumerates all K! rankings: up to 7 items (5040 rankings).
MAX_ENUMERATED_ITEMS = 7
# Up to this many items, a ranking is validated by K^2 vectorised comparisons (beyond, by a sort).
ONE_HOT_ITEMS = 64


def _scores(outputs, family: str = _FAMILY) -> tuple[jax.Array, np.dtype]:
    """Validated scores ``[..., K]`` in the accumulation dtype, and the result dtype."""
    p = unpack.unpack(outputs, family=family, names=_NAMES, event_ndims={"scores": 1})
    return p.scores, p.dtype


def _linear_recurrence(a: jax.Array, b: jax.Array, *, reverse: bool = False) -> jax.Array:
    """``h_t = a_t h_{t-1} + b_t`` along the last axis from ``h_{-1} = 0`` (``reverse``: from the end,
    ``h_t = a_t h_{t+1} + b_t``), by an associative scan: (a, b) then (a', b') is (a a', a' b + b')."""
    if reverse:
        return jnp.flip(_linear_recurrence(jnp.flip(a, -1), jnp.flip(b, -1)), -1)

    def combine(left, right):
        return left[0] * right[0], right[0] * left[1] + right[1]

    return jax.lax.associative_scan(combine, (a, b), axis=a.ndim - 1)[1]


def _exp_of_difference(x: jax.Array, top: jax.Array) -> jax.Array:
    """``exp(x - top)`` for x <= top, and 1 where they are equal (infinite ones included)."""
    same = x == top
    return jnp.where(same, jnp.ones_like(x), jnp.exp(jnp.where(same, jnp.zeros_like(x), x - top)))


def _stages(num_items: int, top_k: int | None) -> int:
    """The stages that carry information: the first ``top_k`` picks, never the last one (a pool of
    one item is picked with probability 1)."""
    return min(num_items if top_k is None else top_k, num_items - 1)


def _picked(stages: int, x: jax.Array) -> jax.Array:
    """``[t < stages]`` along the ranked axis, broadcastable against ``x``."""
    return (jnp.arange(x.shape[-1]) < stages).reshape((1,) * (x.ndim - 1) + (x.shape[-1],))


def _one_shift(stages: int, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The value and ranked partial with one shift per row, ``top = max_t x_t``, when every
    ``e_t = exp(x_t - top)`` is at least the square root of the dtype's smallest normal (``_value_and_partials``).

    ``S_t = sum_{u >= t} e_u`` is a reverse cumulative sum (no rescaling between stages: the shift is
    common). A pick's ``log q_t = log(e_t / S_t) = -log1p(S_{t+1} / e_t)`` (``S_t = e_t + S_{t+1}``,
    nothing subtracted), so a confident pick keeps its tiny ``-log q``; ``S_{t+1} / e_t`` is at most
    ``K / sqrt(tiny)``, far from overflow. The partial is the class's with every ``exp(top_t - top_j)``
    equal to 1: ``[t < m] S_{t+1} / S_t - e_t G_{t-1}``, ``G_t = sum_{j <= t, j < m} 1 / S_j``
    (a cumulative sum).
    """
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    pool = jax.lax.cumsum(e, axis=e.ndim - 1, reverse=True)
    rest = jnp.concatenate([pool[..., 1:], jnp.zeros_like(pool[..., :1])], axis=-1)  # S_{t+1}
    picked = _picked(stages, x)
    value = -jnp.sum(jnp.where(picked, jnp.log1p(rest / e), jnp.zeros_like(x)), axis=-1)
    inverse = jnp.where(picked, 1 / pool, jnp.zeros_like(pool))
    total = jax.lax.cumsum(inverse, axis=inverse.ndim - 1)
    earlier = jnp.concatenate([jnp.zeros_like(total[..., :1]), total[..., :-1]], axis=-1)  # G_{t-1}, never G_t - 1/S_t
    return value, inverse * rest - e * earlier


def _value_and_partials(stages: int, s: jax.Array, ranking: jax.Array):
    """``log p(ranking)`` for valid permutations (int32) and its partial in the scores (see the class).

    Two evaluations of the same sums, chosen per call by ``lax.cond``: where every ranked score is
    within ``log(tiny) / 2`` of its row's maximum (all but adversarial rows), ``_one_shift``; else
    (a spread wider than 44 in float32, 354 in float64, or an infinite or NaN score) ``_running_shift``,
    which shifts each stage's pool by its own maximum. Under ``vmap`` the cond is a select and both
    run.
    """
    x = jnp.take_along_axis(s, ranking, axis=-1)
    floor = 0.5 * math.log(float(jnp.finfo(x.dtype).tiny))
    # NaN and inf differences fail the comparison, so those rows take the running shift.
    narrow = jnp.all(x - jnp.max(x, axis=-1, keepdims=True) >= floor)
    value, partial_ranked = jax.lax.cond(narrow, functools.partial(_one_shift, stages), functools.partial(_running_shift, stages), x)
    return value, (_in_item_order(partial_ranked, ranking), None)  # rankings are not differentiable


def _running_shift(stages: int, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The value and ranked partial with each stage's pool shifted by its own maximum (the class).

    In ranked order ``x_t = s[ranking_t]``: the pool of stage t holds ``x_t..x_{K-1}``, with
    ``top_t`` its maximum (a reverse cumulative max) and ``S_t = sum_{u >= t} exp(x_u - top_t)``,
    by the reverse recurrence ``S_t = exp(x_t - top_t) + exp(top_{t+1} - top_t) S_{t+1}`` (every
    factor <= 1: no overflow, nothing subtracted).
    """
    num_items = x.shape[-1]
    top = jax.lax.cummax(x, axis=x.ndim - 1, reverse=True)
    e = _exp_of_difference(x, top)  # exp(x_t - top_t) in (0, 1]
    # exp(top_{t+1} - top_t) <= 1; 0 past the last item.
    shrink = jnp.concatenate([_exp_of_difference(top[..., 1:], top[..., :-1]), jnp.zeros_like(top[..., :1])], axis=-1)
    pool = _linear_recurrence(shrink, e, reverse=True)  # S_t >= 1
    # The pool but x_t, shifted by top_t: the next pool rescaled (never S_t - e_t, which cancels).
    others = shrink * jnp.concatenate([pool[..., 1:], jnp.zeros_like(pool[..., :1])], axis=-1)
    picked = _picked(stages, x)
    gap = jnp.where(x == top, jnp.zeros_like(x), x - top)
    # log softmax of the picked item in its pool: (x_t - top_t) - log(S_t), S_t - 1 = others + expm1(x_t - top_t),
    # which keeps a confident pick's tiny -log q = log1p(others) (as Categorical does).
    stage_log_q = gap - jnp.log1p(others + jnp.expm1(gap))
    value = jnp.sum(jnp.where(picked, stage_log_q, jnp.zeros_like(x)), axis=-1)
    # Forward: G_t = sum_{j <= t, j picked} exp(top_t - lse_j), G_t = exp(top_t - top_{t-1}) G_{t-1} + [t picked] / S_t.
    grow = jnp.concatenate([jnp.zeros_like(top[..., :1]), _exp_of_difference(top[..., 1:], top[..., :-1])], axis=-1)
    earlier = _linear_recurrence(grow, jnp.where(picked, 1 / pool, jnp.zeros_like(pool)))
    before = grow * jnp.concatenate([jnp.zeros_like(earlier[..., :1]), earlier[..., :-1]], axis=-1)
    # d log p / d x_t = [t picked] (1 - q_t) - sum_{j < t, j picked} q_j(x_t), 1 - q_t = others_t / S_t.
    return value, jnp.where(picked, others / pool, jnp.zeros_like(x)) - e * before


def _in_item_order(ranked: jax.Array, ranking: jax.Array) -> jax.Array:
    """``ranked`` (one entry per position of a valid permutation ``ranking``) put back in item order:
    entry i is ``ranked[r_i]`` with ``ranking[r_i] = i`` (the inverse permutation by a scatter, then a
    gather; a one-hot sum over positions costs 3 times as much at K = 16 on a CPU)."""
    positions = jnp.broadcast_to(jnp.arange(ranking.shape[-1], dtype=ranking.dtype), ranking.shape)
    rank = jnp.put_along_axis(jnp.zeros_like(ranking), ranking, positions, axis=-1, inplace=False)
    return jnp.take_along_axis(ranked, rank, axis=-1)


def _is_permutation(ranking: jax.Array, identity: jax.Array) -> jax.Array:
    """Whether each row of ``ranking`` (entries in 0..K-1) holds every item: up to ``ONE_HOT_ITEMS``
    items by K^2 comparisons (a third of a sort's cost at K = 16 on a CPU), beyond by a sort
    (sorted, a permutation is 0..K-1)."""
    if ranking.shape[-1] <= ONE_HOT_ITEMS:
        return jnp.all(jnp.any(ranking[..., :, None] == identity[..., None, :], axis=-2), axis=-1)
    return jnp.all(jnp.sort(ranking, axis=-1) == identity, axis=-1)


# log p(ranking | scores), differentiated by the closed-form partial (jax.grad, jacfwd, hessian).
plackett_luce_log_prob = closed_form(_value_and_partials, num_static=1)


def _completed(top: jax.Array, identity: jax.Array) -> jax.Array:
    """The top items ``[..., m]`` followed by every other item in increasing order: a permutation
    when the top items are distinct (a repeated one leaves an entry K, which the validity test
    catches). The order of the unranked items does not change a top-m log-likelihood."""
    num_items = identity.shape[-1]
    chosen = jnp.any(top[..., :, None] == identity[..., None, :], axis=-2)  # [..., K]
    unranked = jnp.sort(jnp.where(chosen, num_items, jnp.broadcast_to(identity, chosen.shape)), axis=-1)
    return jnp.concatenate([top, unranked[..., : num_items - top.shape[-1]]], axis=-1)


def _check_top_k(top_k) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, numbers.Integral) and not isinstance(top_k, bool) and int(top_k) >= 1:
        return int(top_k)
    raise ValueError(f"PlackettLuce(top_k=...) must be None or a whole number >= 1; got {top_k!r}.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlackettLuce:
    r"""Plackett-Luce distribution over rankings of K items, from one score per item.

    ``PlackettLuce(top_k=None)``. outputs: scores ``s [..., K]`` (logits: item i is picked from a
    pool with probability proportional to ``exp(s_i)``). targets: rankings ``[..., K]``, permutations
    of 0..K-1 (integer, or floating whole numbers) with ``targets[..., 0]`` the top-ranked item.
    ``top_k=m`` scores only the first m picks (a partial ranking; ``top_k=1`` is Categorical on the
    top item): its targets are the top m items ``[..., m]``, or a whole permutation ``[..., K]`` of
    which only the first m entries count (any completion gives the same value). A target that is
    not a permutation (a repeated item, one outside 0..K-1) gives ``-inf``.

    Density, with ``pi`` the ranking: ``log p(pi) = sum_{j < m} (s_{pi_j} - logsumexp(s_{pi_j}, ...,
    s_{pi_{K-1}}))``, m = top_k (K by default; the last pick, from a pool of one, adds 0). The pools'
    log-sum-exps are a reverse cumulative logsumexp over the ranked scores ``x_j = s_{pi_j}``, kept
    as a reverse cumulative max ``top_j`` and ``S_j = sum_{u >= j} exp(x_u - top_j)`` (a linear
    recurrence whose factors are all <= 1). Each pick's term is
    ``(x_j - top_j) - log1p(others_j + expm1(x_j - top_j))``, ``others_j = S_j - exp(x_j - top_j)``
    computed from the rest of the pool, so a confident pick keeps its tiny ``-log q = log1p(others)``.
    Where a row's scores all lie within ``log(tiny) / 2`` of its maximum (44 in float32), one shift
    serves every pool (``_one_shift``: cumulative sums, ``-log q_t = log1p(S_{t+1} / e_t)``), at half
    the cost; wider rows, infinities and NaN take the running shift (``lax.cond`` per call).

    Gradient. With ``q_j(i) = exp(s_i - logsumexp(pool_j))`` the softmax of stage j's pool,
    ``d log p/d s_i = [i among the first m picks] - sum_{j < m, i in pool_j} q_j(i)``: each pick's
    term is a log-softmax, whose derivative is the indicator minus the softmax, and item i is in the
    pools of the stages up to its own position r_i. So
    ``d(-log p)/d s_i = sum_{j <= min(r_i, m-1)} q_j(i) - [r_i < m]``. It is evaluated in ranked
    order as ``[t < m] (1 - q_t(x_t)) - exp(x_t - top_t) exp(top_t - top_{t-1}) G_{t-1}`` with
    ``1 - q_t = others_t / S_t`` (no cancellation at a confident pick) and
    ``G_t = sum_{j <= t, j < m} exp(top_t - top_j) / S_j`` by the forward recurrence
    ``G_t = exp(top_t - top_{t-1}) G_{t-1} + [t < m] / S_t`` (every term <= 1); then put back in item
    order. ``log_prob`` differentiates through exactly this partial (a ``closed_form`` custom_jvp),
    so ``jax.grad``, ``jacfwd`` and ``hessian`` run the derivation.

    No closed-form mean, entropy, KL or Fisher information (each is a sum over K! rankings):
    those methods raise ``NotImplementedError``; ``expectation_nodes`` enumerates the rankings of
    up to 7 items.
    """

    top_k: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "top_k", _check_top_k(self.top_k))

    def _prepare(self, outputs, targets) -> tuple[jax.Array, jax.Array, jax.Array, np.dtype]:
        """Validated scores and rankings broadcast to one batch shape: ``(scores, ranking, valid,
        dtype)``, the ranking int32 with every invalid row replaced by the identity."""
        p = unpack.unpack(outputs, family=_FAMILY, names=_NAMES, event_ndims={"scores": 1})
        num_items = p.scores.shape[-1]
        if self.top_k is not None and self.top_k > num_items:
            raise ValueError(f"PlackettLuce(top_k={self.top_k}) scores more picks than the K = {num_items} "
                             f"items of outputs shape {p.scores.shape}.")
        y = validate.numeric_targets(targets, where=f"{_FAMILY} targets")
        lengths = (num_items,) if self.top_k is None else (num_items, self.top_k)
        if y.ndim == 0 or y.shape[-1] not in lengths:
            partial = "" if self.top_k is None else f", or the top {self.top_k} items [..., {self.top_k}]"
            raise ValueError(f"{_FAMILY}: targets are rankings [..., K], permutations of 0..K-1 with K = {num_items} "
                             f"as in outputs shape {p.scores.shape}{partial}; got targets shape {y.shape}.")
        p, y = unpack.with_targets(p, y, family=_FAMILY, event_ndim=1, cast=False)
        ranking, entry_valid = numerics.labels_or_zero(y, num_items)
        identity = jnp.arange(num_items, dtype=jnp.int32).reshape((1,) * (y.ndim - 1) + (num_items,))
        if ranking.shape[-1] < num_items:
            ranking = _completed(ranking, identity)
        # A permutation: every entry in 0..K-1, and sorted they are 0..K-1 (no item repeated).
        valid = jnp.all(entry_valid, axis=-1) & _is_permutation(ranking, identity)
        ranking = jnp.where(valid[..., None], ranking, jnp.broadcast_to(identity, ranking.shape))  # double where
        return p.scores, ranking, valid, p.dtype

    def log_prob(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Per-example ``log p(targets | scores)`` (the first ``top_k`` picks)."""
        s, ranking, valid, dtype = self._prepare(outputs, targets)
        lp = plackett_luce_log_prob(_stages(s.shape[-1], self.top_k), s, ranking)
        return minus_inf_off_support(lp, valid).astype(dtype)

    def grad(self, outputs: ArrayLike, targets: ArrayLike) -> jax.Array:
        """Closed form ``sum_{j <= min(r_i, m-1)} q_j(i) - [r_i < m]``, shape [..., K] (see the class);
        rows whose target is not a permutation are NaN."""
        s, ranking, valid, dtype = self._prepare(outputs, targets)
        _, (partial, _) = _value_and_partials(_stages(s.shape[-1], self.top_k), s, ranking)
        return jnp.where(valid[..., None], -partial, jnp.nan).astype(dtype)

    def params(self, outputs: ArrayLike) -> dict[str, jax.Array]:
        """The scores, and ``probs = softmax(scores)``: each item's probability of being ranked first."""
        s, dtype = _scores(outputs)
        return {"scores": s.astype(dtype), "probs": jax.nn.softmax(s).astype(dtype)}

    def mean(self, outputs: ArrayLike) -> jax.Array:
        """Not available: a ranking has no mean in closed form (it is a sum over K! permutations)."""
        raise NotImplementedError("PlackettLuce has no closed-form mean (a sum over K! rankings).")

    def sample(self, key: jax.Array, outputs: ArrayLike, *, sample_shape: Sequence[int] = ()) -> jax.Array:
        """Full rankings (int32), shape ``sample_shape + scores.shape``, by the Gumbel-top-k trick:
        sorting ``s + G`` (G standard Gumbel) in decreasing order picks each next item with
        probability ``softmax`` over the remaining pool (Yellott 1977)."""
        s, _ = _scores(outputs)
        shape = tuple(sample_shape) + s.shape
        perturbed = jnp.broadcast_to(s, shape) + jax.random.gumbel(key, shape, s.dtype)
        return jnp.argsort(-perturbed, axis=-1).astype(jnp.int32)

    def entropy(self, outputs: ArrayLike) -> jax.Array:
        """Not available: the entropy is a sum over K! rankings, with no closed form."""
        raise NotImplementedError("PlackettLuce has no closed-form entropy (a sum over K! rankings).")

    def kl(self, outputs_p: ArrayLike, outputs_q: ArrayLike) -> jax.Array:
        """Not available: the KL divergence is a sum over K! rankings, with no closed form."""
        raise NotImplementedError("PlackettLuce has no closed-form KL divergence (a sum over K! rankings).")

    def fisher(self, outputs: ArrayLike) -> jax.Array:
        """Not available: the expected Hessian depends on which pools each ranking forms (K! terms)."""
        raise NotImplementedError("PlackettLuce has no closed-form Fisher information (a sum over K! rankings).")

    def constant_terms(self, targets: ArrayLike) -> jax.Array:
        """The part of ``log_prob`` free of the scores: none, so 0 (the targets' batch shape)."""
        y = validate.numeric_targets(targets, where=f"{_FAMILY} targets")
        if y.ndim == 0:
            raise ValueError(f"{_FAMILY} targets are rankings [..., K]; got shape ().")
        return jnp.zeros(y.shape[:-1], numerics.accumulation_dtype(numerics.float_dtype(y)))

    def expectation_nodes(self, outputs: ArrayLike) -> tuple[jax.Array, jax.Array]:
        """Exact expectation over all K! rankings (K <= 7): nodes ``[K!, *batch, K]`` (int32) and
        their probabilities (with ``top_k``, each ranking's share of its partial ranking's mass)."""
        s, _ = _scores(outputs)
        num_items = s.shape[-1]
        if num_items > MAX_ENUMERATED_ITEMS:
            raise ValueError(f"PlackettLuce.expectation_nodes enumerates K! rankings, for K <= "
                             f"{MAX_ENUMERATED_ITEMS}; got K = {num_items}.")
        table = np.asarray(list(itertools.permutations(range(num_items))), np.int32)
        nodes = jnp.asarray(table).reshape((table.shape[0],) + (1,) * (s.ndim - 1) + (num_items,))
        nodes = jnp.broadcast_to(nodes, (table.shape[0],) + s.shape)
        full = PlackettLuce()
        weights = jnp.exp(full.log_prob(jnp.broadcast_to(s[None], nodes.shape), nodes).astype(s.dtype))
        return nodes, weights

    @classmethod
    def check_cases(cls) -> tuple[Case, ...]:
        """The row of the check table: full rankings of 4 items, scores at random (rankings drawn from
        the model) and confident, ±1e4, ±3e38 and -inf ones among the extremes. (``top_k`` runs the
        same kernel with fewer stages: tests/test_ordinal_and_rankings.py checks it against mpmath,
        rather than a second row costing the suite another full set of compiles.)"""
        return (Case(_FAMILY, cls(), _random, _extreme, plain_log_prob=_plain(None)),)


# -- check cases: 4 items, scores up to ±3e38 ------------------------------------------------------

NUM_ITEMS = 4


def _plain(top_k: int | None):
    """The textbook formula ``sum_{j < m} (s_{pi_j} - log(sum_{u >= j} exp(s_{pi_u})))``, a loop over picks."""
    def plain_log_prob(s, ranking):
        x = jnp.take_along_axis(s, ranking.astype(jnp.int32), axis=-1)
        picks = x.shape[-1] if top_k is None else top_k
        return sum(x[..., j] - jnp.log(jnp.sum(jnp.exp(x[..., j:]), axis=-1)) for j in range(picks))

    return plain_log_prob


def _random(key, dtype, n):
    """Scores ``2 N(0, 1)`` and a ranking drawn from the model (Gumbel-top-k), from one draw of uniforms."""
    u = draws.uniform_rows(key, (n, 2 * NUM_ITEMS))
    s = 2 * draws.box_muller(u[:, :NUM_ITEMS])
    gumbel = -jnp.log(-jnp.log(u[:, NUM_ITEMS:]))
    ranking = jnp.argsort(-(s + gumbel), axis=-1).astype(jnp.int32)
    return s.astype(dtype), ranking


def _extreme(dtype):
    inf = math.inf
    s = jnp.array([[20.0, 0.0, 0.0, 0.0], [1e4, -1e4, 0.0, 0.0], [1e4, -1e4, 0.0, 0.0], [3e38, -3e38, 0.0, 0.0],
                   [-inf, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [80.0, 40.0, 0.0, -40.0], [-1e4, 1e4, 0.0, 0.0]], dtype)
    ranking = jnp.array([[0, 1, 2, 3], [0, 2, 3, 1], [1, 0, 2, 3], [0, 2, 3, 1], [2, 1, 3, 0], [3, 1, 0, 2],
                         [0, 1, 2, 3], [1, 3, 2, 0]], jnp.int32)
    return s, ranking
