r"""Fused distillation: the KL divergence between a teacher's and a student's softmax over the
vocabulary, per token, without materialising either model's ``[N, V]`` logits.

Per row, with student logits ``s = (h_s @ W_s + b_s) / t`` and teacher logits ``a = (h_t @ W_t + b_t) / t``,
``direction="forward"`` is ``KL(teacher || student)`` and ``"reverse"`` is ``KL(student || teacher)``.
Write ``KL(P || Q)`` with ``P = softmax(x)``, ``Q = softmax(y)`` for either; ``L_x = logsumexp(x)``.

A form that does not cancel. ``KL = sum_c p_c d_c`` with ``d_c = log p_c - log q_c`` has terms of
both signs: for a nearly identical pair the terms are ~ delta and their sum ~ delta^2, so the plain
sum (or ``E_p[x - y] - (L_x - L_y)``) keeps only ``eps / delta`` of relative accuracy (a KL of
1e-9 comes out as noise or 0 in float32). Since ``sum_c (q_c - p_c) = 0``, adding it is free:

    KL = sum_c p_c (d_c - 1 + exp(-d_c)) = sum_c p_c phi(d_c),    phi(d) = expm1mx(-d) >= 0,

(``expm1mx(r) = e^r - 1 - r``, a Taylor series for |r| <= 1; ``p_c e^{-d_c} = q_c``), a sum of
terms >= 0 with full relative accuracy.

One pass, online. ``d_c = (x_c - y_c) - c`` needs the final ``c = L_x - L_y``, which the blocks
only know at the end. Each part (a block, the carry, a device's shard) keeps, per row, the
logsumexp of both over its classes (``top_p, total_p``, ``top_q, total_q``: ``L = top + log total``),
and with ``w_c = exp(x_c - top_p)`` and the part's own shift ``c = L_x - L_y``,

    K(c) = sum_part w_c phi(d_c(c)),     D(c) = sum_part w_c expm1(-d_c(c))   (= dK/dc).

Moving to a new shift ``c' = c + e`` is exact in closed form (``d' = d - e``,
``phi(d - e) = phi(d) + expm1mx(e) + expm1(-d) expm1(e)``, ``expm1(-d + e) = expm1(-d) + expm1(e)(1 + expm1(-d))``):

    K(c') = K(c) + total_p expm1mx(e) + D(c) expm1(e),    D(c') = D(c) + expm1(e) (D(c) + total_p),

and a larger ``top_p`` rescales both by ``exp(old - new)``. A part's own c is the minimiser of its
``K`` (``dK/dc = e^{c + top_q - top_p} total_q - total_p = 0`` there), so its ``D`` is ~ 0 and moving
it adds terms >= 0 up to that small ``D``: no step cancels. Parts merge (``KLConfig.merge``: a
block into the carry, or the devices' shards by ``pmax``/``psum``) by moving each to the combined
tops and shift and adding; at the end ``KL = K / total_p``. An error eta in the computed ``c``
changes the result only by ``O(eta^2)`` (c is a minimiser) and ``D`` carries the first-order part;
the last step moves to the shift where ``D = 0`` exactly (``row_terms``), which removes the
``eta^2`` too, so a KL of 1e-9 keeps its relative accuracy. The shift is computed as
``(top_p - top_q) + log(total_p / total_q)`` (the ratio first: accurate to an ulp of c rather than of L).

With ``r_c = -d_c = (y_c - x_c) + c``: for |r| <= 1 the terms are ``w_c expm1mx(r_c)`` (the series)
and ``w_c (expm1mx(r_c) + r_c)``; beyond, where nothing cancels, they use
``w_c e^{r_c} = exp(y_c - top_q) total_p / total_q`` (the q side's exponential, already computed), so
neither ``e^r`` nor ``0 * inf`` appears: ``w phi = w e^r - w - w r`` and ``w expm1(r) = w e^r - w``. A class with ``q_c = 0 < p_c`` (a
``-inf`` logit on the q side only) makes the KL ``+inf``; a class ``-inf`` on both sides adds 0.

Temperature. The statistics keep the raw maxima of ``a = h W + b`` and divide only differences by
t (``blocks.tempered``): ``w_c = exp((x_c - top_p) / t)`` and ``r_c = (y_c - x_c) / t + c`` with raw
``x, y``, so two models' nearly equal logits keep the relative accuracy of their difference at any
t (``y / t - x / t`` would round each quotient to 6e-8 of its size first, and a KL of 1e-9 from
differences of 1e-4 would keep two digits).

No generalised Jensen-Shannon divergence: its mixture ``m_c = beta p_c + (1 - beta) q_c`` needs
both final normalisers inside every class's ``log m_c`` (``log(beta e^{x_c - L_x} + (1 - beta)
e^{y_c - L_y})``), which no carried sum can rescale afterwards as ``K`` and ``D`` are rescaled
here: it takes a second pass over the vocabulary, so it does not fall out of this one.

Gradient (student only; the teacher is a constant). With ``p = softmax(x)``, ``q = softmax(y)``:

    forward, student = Q:  d KL / d y_c = q_c - p_c,
    reverse, student = P:  d KL / d x_c = p_c (d_c - KL)

(the first from ``d log q_k / d y_c = delta_kc - q_c``: ``-sum_k p_k (delta_kc - q_c) = q_c - p_c``;
the second from ``d p_k / d x_c = p_k (delta_kc - p_c)`` and ``d d_k / d x_c = delta_kc - p_c``:
``sum_k p_k (delta_kc - p_c) d_k + sum_k p_k (delta_kc - p_c) = p_c (d_c - KL) + 0``).
The backward pass recomputes both blocks and accumulates ``G_b W_s,b^T / t`` and ``h_s^T G_b / t``
like the fused NLL (``blocks.local_grads``); a row whose KL is infinite gets no gradient.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from mlnll._src import numerics
from mlnll._src.losses import reduce as reduce_
from mlnll._src.numerics import series
from mlnll._src.vocab import blocks, fused

DIRECTIONS = ("forward", "reverse")


class KLStats(NamedTuple):
    """Per-row statistics of the KL's forward pass (``[N]`` each; see the module docstring)."""

    top_p: jax.Array  # raw: the max of P's untempered logits
    total_p: jax.Array  # sum exp((x - top_p) / t)
    top_q: jax.Array  # raw
    total_q: jax.Array  # sum exp((y - top_q) / t)
    divergence: jax.Array  # K at the part's shift, in units of exp(top_p)
    slope: jax.Array  # D = dK/dc at the part's shift
    infinite: jax.Array  # bool: some class has q_c = 0 < p_c


class KLResiduals(NamedTuple):
    top_p: jax.Array
    log_total_p: jax.Array
    top_q: jax.Array
    log_total_q: jax.Array
    shift: jax.Array  # c = L_p - L_q
    kl: jax.Array
    finite: jax.Array  # bool


def check_direction(direction) -> bool:
    """``True`` for ``"reverse"``; ``ValueError`` naming the choices unless one of them."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(map(repr, DIRECTIONS))}; got {direction!r}.")
    return direction == "reverse"


def _expm1mx_small(x: jax.Array) -> jax.Array:
    """``e^x - 1 - x`` for |x| <= 1 only (callers clamp): the Taylor series ``sum_{k>=2} x^k / k!``,
    to k = 12 in float32 (the first omitted term is below 1e-9 of the value) and to k = 21 wider."""
    coeffs = series.EXPM1MX_COEFFS if x.dtype.itemsize > 4 else series.EXPM1MX_COEFFS[:11]
    return series.horner(coeffs, x) * x * x


def log_ratio_shift(top_p, total_p, top_q, total_q, temperature: float) -> jax.Array:
    """``c = L_p - L_q = (top_p - top_q) / t + log(total_p / total_q)`` (raw tops): the ratio of the
    sums first, so that two close normalisers give c to an ulp of itself."""
    raw = blocks.shift_of(top_p) - blocks.shift_of(top_q)
    return blocks.tempered(raw, temperature) + jnp.log(total_p / total_q)


def shift_or_zero(top_p, total_p, top_q, total_q, temperature: float) -> jax.Array:
    """The shift ``c``, or 0 for a row with nothing on one side yet (whose K and D are 0)."""
    seen = (total_p > 0) & (total_q > 0)
    safe = lambda v: jnp.where(seen, v, jnp.ones_like(v))  # noqa: E731  (double where: no log 0)
    c = log_ratio_shift(top_p, safe(total_p), top_q, safe(total_q), temperature)
    return jnp.where(seen, c, jnp.zeros_like(c))


def moved(divergence, slope, total_p, move, log_rescale) -> tuple[jax.Array, jax.Array]:
    """``(K, D)`` at a shift larger by ``move``, rescaled by ``exp(log_rescale)`` (a larger top_p):
    ``rescale (K + total_p expm1mx(move) + D expm1(move))`` and ``rescale (D + expm1(move) (D + total_p))``
    (exact; see the module docstring).

    |move| <= 1: the series ``expm1mx`` keeps the small ``move**2 / 2`` accurate. Beyond, the
    products are formed as ``exp(log_rescale + move)``, which cannot overflow (it is at most about
    ``total_p`` after the move, while ``exp(move)`` alone may be 1e40), and nothing cancels.
    """
    rescale = jnp.exp(log_rescale)
    small = jnp.abs(move) <= 1
    move_small = jnp.where(small, move, jnp.zeros_like(move))
    move_large = jnp.where(small, jnp.ones_like(move), move)
    grown = jnp.exp(log_rescale + move_large)  # rescale * exp(move)
    bump = jnp.where(small, rescale * numerics.expm1mx(move_small), grown - rescale * (1 + move_large))
    grow = jnp.where(small, rescale * jnp.expm1(move_small), grown - rescale)
    return rescale * divergence + total_p * bump + slope * grow, rescale * slope + grow * (slope + total_p)


def carried(part: KLStats, shift_p, shift_q, total_p, total_q, shift,
            temperature: float) -> tuple[jax.Array, jax.Array]:
    """``(K, D)`` of ``part`` (statistics of some of the classes, at their own tops and shift) at
    the combined ``shift`` and in units of ``exp(shift_p / t)``, given the combined (raw) tops' shifts
    and sums.

    Classes seen while P had no mass (every ``p_c = 0`` there, so no shift yet) add ``w e^r``, q_c's
    share alone: ``exp(y - top_q) total_p / total_q`` summed, i.e. their total_q times that ratio.
    """
    t = temperature
    has_p, has_q = part.total_p > 0, part.total_q > 0
    own = shift_or_zero(part.top_p, part.total_p, part.top_q, part.total_q, t)
    move = jnp.where(has_p & has_q, shift - own, jnp.zeros_like(shift))
    # exp((old top - new top) / t): 0 when part's top was -inf (then has_p is False).
    log_rescale = blocks.tempered(part.top_p - shift_p, t)
    divergence, slope = moved(part.divergence, part.slope, part.total_p, move, log_rescale)
    safe_total_q = jnp.where(total_q > 0, total_q, jnp.ones_like(total_q))
    q_only = part.total_q * jnp.exp(blocks.tempered(part.top_q - shift_q, t)) * (total_p / safe_total_q)
    q_only = jnp.where(has_q, q_only, jnp.zeros_like(q_only))
    return jnp.where(has_p, divergence, q_only), jnp.where(has_p, slope, q_only)


def block_terms(logits_p, logits_q, temperature: float) -> KLStats:
    """The statistics of one block of both raw logits (``[N, B]`` each), at the block's own tops and shift."""
    top_p, _, _, exp_p = blocks.block_exp(logits_p, temperature)
    top_q, _, _, exp_q = blocks.block_exp(logits_q, temperature)
    total_p, total_q = jnp.sum(exp_p, axis=1), jnp.sum(exp_q, axis=1)
    shift = shift_or_zero(top_p, total_p, top_q, total_q, temperature)
    # r_c = -d_c = log q_c - log p_c = (y_c - x_c) / t + c: the raw difference first, then divided.
    mismatch = (logits_q == -jnp.inf) & (logits_p > -jnp.inf)  # q_c = 0 < p_c: KL = +inf
    r = blocks.tempered(logits_q - logits_p, temperature) + shift[:, None]
    near = jnp.abs(r) <= 1
    r_near = jnp.where(near, r, jnp.zeros_like(r))  # double where: the series sees |r| <= 1 only
    phi_near = _expm1mx_small(r_near)
    # w e^r = exp(y - top_q) total_p / total_q: the q side's exponential, no exp(r) overflow.
    safe_total_q = jnp.where(total_q > 0, total_q, jnp.ones_like(total_q))
    q_side = exp_q * (total_p / safe_total_q)[:, None]
    p_times_r = jnp.where(exp_p > 0, exp_p * r, jnp.zeros_like(r))  # 0, not 0 * inf, where p_c = 0
    zero = jnp.zeros_like(r)
    term_k = jnp.where(mismatch, zero, jnp.where(near, exp_p * phi_near, (q_side - exp_p) - p_times_r))
    term_d = jnp.where(mismatch, zero, jnp.where(near, exp_p * (phi_near + r_near), q_side - exp_p))
    return KLStats(top_p, total_p, top_q, total_q, jnp.sum(term_k, axis=1), jnp.sum(term_d, axis=1),
                   jnp.any(mismatch, axis=1))


def _accumulation_dtype(args):
    """float32 (float64 if any input is): what both models' blocks compute in."""
    return numerics.accumulation_dtype(numerics.float_dtype(*(a for a in args if a is not None)))


@dataclasses.dataclass(frozen=True)
class KLConfig:
    """Static options of one fused KL call, and its kernel of ``blocks.run``. Its arguments: the
    student's and the teacher's ``(hidden, weight, bias)``, in that order."""

    num_classes: int  # V, the whole vocabulary (all shards)
    block_size: int
    temperature: float
    reverse: bool  # KL(student || teacher); else KL(teacher || student)

    def specs(self, args, layout: blocks.Layout) -> tuple:
        return (*layout.model(args[:3]), *layout.model(args[3:]))

    def empty(self, args) -> KLStats:
        zeros = jnp.zeros((args[0].shape[0],), _accumulation_dtype(args))
        neg_inf = jnp.full_like(zeros, -jnp.inf)
        return KLStats(neg_inf, zeros, neg_inf, zeros, zeros, zeros, jnp.zeros(zeros.shape, bool))

    def p_and_q(self, args, start, size: int):
        """``(x, y)``: this block's raw logits of P and of Q in ``KL(P || Q)``, in one dtype."""
        student = blocks.model_logits(args[:3], start, size)
        teacher = blocks.model_logits(args[3:], start, size)
        dtype = _accumulation_dtype(args)
        student, teacher = student.astype(dtype), teacher.astype(dtype)
        return (student, teacher) if self.reverse else (teacher, student)

    def block_stats(self, args, start, size: int, first_class) -> KLStats:
        x, y = self.p_and_q(args, start, size)
        return block_terms(x, y, self.temperature)

    def merge(self, parts, across: blocks.Across) -> KLStats:
        top_p, top_q = across.max([(p.top_p, p.top_q) for p in parts])
        shift_p, shift_q = blocks.shift_of(top_p), blocks.shift_of(top_q)
        t = self.temperature
        # Each part's sums were relative to its own maxima: rescale by exp((top_i - top) / t) (0 for -inf).
        total_p, total_q = across.sum([(p.total_p * jnp.exp(blocks.tempered(p.top_p - shift_p, t)),
                                        p.total_q * jnp.exp(blocks.tempered(p.top_q - shift_q, t))) for p in parts])
        shift = shift_or_zero(top_p, total_p, top_q, total_q, t)
        # Each part's K and D moved to the combined shift and tops (closed form), then summed.
        summed = [(*carried(p, shift_p, shift_q, total_p, total_q, shift, t), p.infinite.astype(total_p.dtype))
                  for p in parts]
        divergence, slope, infinite = across.sum(summed)
        return KLStats(top_p, total_p, top_q, total_q, divergence, slope, infinite > 0)

    def outputs(self, stats: KLStats, args):
        return row_terms(stats, self.temperature)

    def block_grad(self, args, start, size: int, first_class, residuals: KLResiduals, ct) -> jax.Array:
        top_p, log_total_p, top_q, log_total_q, shift, kl, finite = residuals
        # The chain rule's 1/t through z = (h W + b) / t, folded into the per-row cotangent.
        ct = jnp.where(finite, ct, jnp.zeros_like(ct)) * (1.0 / self.temperature)
        x, y = self.p_and_q(args, start, size)
        t = self.temperature
        # p = exp((x - top) / t - log S): the shift first, as in the fused NLL.
        p = jnp.exp(blocks.tempered(x - top_p[:, None], t) - log_total_p[:, None])
        if not self.reverse:  # student = Q: d KL / d y = q - p
            q = jnp.exp(blocks.tempered(y - top_q[:, None], t) - log_total_q[:, None])
            return ct[:, None] * (q - p)
        # student = P: d KL / d x = p (d - KL), d = (x - y) / t - c; 0 where p = 0 (d may be -inf - -inf).
        keep = (p > 0) & finite[:, None]
        d = jnp.where(keep, blocks.tempered(x - y, t) - shift[:, None], jnp.zeros_like(p))
        return jnp.where(keep, (ct[:, None] * p) * (d - kl[:, None]), jnp.zeros_like(p))

    def cotangents(self, args, grads) -> tuple:
        # The student's gradients in its dtypes; zero (None) for the teacher, a constant.
        s_hidden, s_weight, s_bias = args[:3]
        return (*blocks.model_cotangents(s_hidden, s_weight, s_bias, grads), None, None, None)


def row_terms(stats: KLStats, temperature: float) -> tuple[jax.Array, KLResiduals]:
    """``(kl, residuals)`` per row from the statistics of the whole vocabulary.

    The shift ``c`` is ``L_p - L_q`` from the two sums, each rounded: off the exact minimiser by
    eta ~ eps, which would leave ``eta^2 / 2`` in the KL (1e-5 of a KL of 1e-9). The last step
    moves to where the slope vanishes, exactly: ``D(c + e) = D + expm1(e)(D + total_p) = 0`` at
    ``e = -log1p(D / total_p)``, and ``K(c + e)`` by the same closed form (``D``, a sum of small
    terms, is accurate to eps of its terms, not of ``total_p``).
    """
    finite = ~stats.infinite
    settle = finite & (stats.total_p > 0)
    ratio = jnp.where(settle, stats.slope / jnp.where(settle, stats.total_p, jnp.ones_like(stats.total_p)), 0.0)
    move = -jnp.log1p(ratio)
    divergence, _ = moved(stats.divergence, stats.slope, stats.total_p, move, jnp.zeros_like(move))
    kl = jnp.where(stats.infinite, jnp.inf, divergence / stats.total_p)
    keep = lambda v: jnp.where(finite, v, jnp.zeros_like(v))  # noqa: E731  (an infinite row: no gradient)
    shift = shift_or_zero(stats.top_p, stats.total_p, stats.top_q, stats.total_q, temperature) + move
    residuals = KLResiduals(keep(stats.top_p), keep(jnp.log(stats.total_p)), keep(stats.top_q),
                            keep(jnp.log(stats.total_q)), keep(shift), keep(kl), finite)
    return kl, residuals


def _per_example(s_hidden, s_weight, s_bias, t_hidden, t_weight, t_bias, cfg: KLConfig):
    """The per-row KL on one device (a ``custom_vjp`` with gradients for the student only)."""
    return blocks.run(cfg, None, s_hidden, s_weight, s_bias, t_hidden, t_weight, t_bias)


# ----------------------------------------------------------------------------------------------
# The calls (one device, or vocab-parallel with ``sharding``)


def prepare(student_hidden, student_weight, teacher_hidden, teacher_weight, student_bias, teacher_bias, where, *,
            name: str):
    """Validated, flattened ``(student, teacher, where, batch_shape)``; each model's hidden may have
    its own width D, but both share the batch shape and the vocabulary V."""
    s_hidden, s_weight = fused.layer(student_hidden, student_weight, name=name, prefix="student_")
    t_hidden, t_weight = fused.layer(teacher_hidden, teacher_weight, name=name, prefix="teacher_")
    if t_hidden.shape[:-1] != s_hidden.shape[:-1]:
        raise ValueError(
            f"{name}: teacher_hidden must have the batch shape {s_hidden.shape[:-1]} of student_hidden; "
            f"got shape {t_hidden.shape}."
        )
    if t_weight.shape[1] != s_weight.shape[1]:
        raise ValueError(
            f"{name}: teacher_weight must have V = {s_weight.shape[1]} classes (student_weight's); "
            f"got shape {t_weight.shape}."
        )
    num_classes = s_weight.shape[1]
    s_bias = fused.layer_bias(student_bias, num_classes, name=name, prefix="student_")
    t_bias = fused.layer_bias(teacher_bias, num_classes, name=name, prefix="teacher_")
    batch_shape = s_hidden.shape[:-1]
    where = fused.row_mask(where, batch_shape, target="the batch shape")
    rows = math.prod(batch_shape)
    s_hidden = s_hidden.reshape(rows, s_hidden.shape[-1])
    t_hidden = t_hidden.reshape(rows, t_hidden.shape[-1])
    return (s_hidden, s_weight, s_bias), (t_hidden, t_weight, t_bias), where, batch_shape


def check_options(temperature, direction, reduction, block_size) -> tuple[float, bool]:
    reduce_.check_reduction(reduction)
    fused.check_block_size(block_size)
    return fused.check_temperature(temperature), check_direction(direction)


def compute_kl(name: str, student_hidden, student_weight, teacher_hidden, teacher_weight, *,
               sharding: blocks.Sharding | None, temperature, direction, student_bias, teacher_bias, where,
               reduction: str, block_size):
    """The validated call behind ``linear_categorical_kl`` and its vocab-parallel twin."""
    temperature, reverse = check_options(temperature, direction, reduction, block_size)
    student, teacher, where, batch_shape = prepare(student_hidden, student_weight, teacher_hidden, teacher_weight,
                                                   student_bias, teacher_bias, where, name=name)
    num_classes = student[1].shape[1]
    layout, local_classes, rows = blocks.layout_for(name, sharding, num_classes, student[0].shape[0])
    cfg = KLConfig(num_classes, blocks.block_size_for(block_size, rows, local_classes), temperature, reverse)
    kl = blocks.apply(cfg, layout, (*student, *teacher))
    dtype = numerics.float_dtype(*(a for a in (*student, *teacher) if a is not None))
    return fused.reduce(kl, None, where, None, reduction, dtype, batch_shape)


def linear_categorical_kl(
    student_hidden: ArrayLike,
    student_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_weight: ArrayLike,
    *,
    temperature: float = 1.0,
    direction: str = "forward",
    student_bias: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
    block_size: int | None = None,
) -> jax.Array:
    r"""Per-token KL divergence between teacher and student softmaxes, without either model's ``[N, V]`` logits.

    With ``s = (student_hidden @ student_weight + student_bias) / t`` and
    ``a = (teacher_hidden @ teacher_weight + teacher_bias) / t``, per row:
    ``direction="forward"``: ``KL(softmax(a) || softmax(s))`` (the usual distillation loss);
    ``"reverse"``: ``KL(softmax(s) || softmax(a))`` (mode-seeking, as in on-policy distillation).
    Equal to ``sum_c p_c (log p_c - log q_c)`` with the log-softmaxes of the materialised logits, but
    computed blockwise over the vocabulary in one pass with both online logsumexps, as
    ``sum_c p_c phi(d_c)``, ``phi(d) = d - 1 + e^{-d} >= 0`` (the same sum: ``sum_c (q_c - p_c) = 0``),
    whose terms are all >= 0, so a KL of 1e-9 between nearly identical models keeps its relative
    accuracy (the module docstring derives the online update). float32 accumulation, also for
    bfloat16 inputs.

    Gradients reach the student only (``d KL/d s_c = q_c - p_c`` forward, ``p_c (d_c - KL)`` reverse,
    times ``1/t``); the teacher's arguments are constants (their cotangents are zero, as under
    ``jax.lax.stop_gradient``). For Hinton's scaling multiply the loss by ``t**2``.

    Args:
      student_hidden: ``[N, D_s]`` (or ``[..., D_s]``) floating features of the student.
      student_weight: ``[D_s, V]`` the student's output layer.
      teacher_hidden: ``[N, D_t]`` (same batch shape; its own width) features of the teacher.
      teacher_weight: ``[D_t, V]`` the teacher's output layer (same V).
      temperature: t > 0, a Python number dividing both models' logits.
      direction: ``"forward"`` (KL(teacher || student)) or ``"reverse"`` (KL(student || teacher)).
      student_bias: optional ``[V]``.
      teacher_bias: optional ``[V]``.
      where: optional boolean mask of the rows to keep.
      reduction: ``"mean"`` over kept rows (0 if none is kept), ``"sum"`` or ``"none"`` (per row,
        dropped rows 0).
      block_size: columns per block; default about ``2**21 / N`` (a multiple of 128).

    Returns:
      The reduced KL (``reduction="none"``: the batch shape), in the inputs' floating dtype. A row
      where the student (forward) or teacher (reverse) gives probability 0 to a class the other
      does not is ``+inf`` (and gets no gradient); a class ``-inf`` in both adds nothing.

    Differentiable with ``jax.grad``/``jax.vjp`` in the student's arguments (a ``custom_vjp``
    recomputing both models' blocks); not with ``jax.jacfwd``.

    Example:
      >>> import jax, jax.numpy as jnp, mlnll
      >>> h = jax.random.normal(jax.random.PRNGKey(0), (8, 16))
      >>> w = jax.random.normal(jax.random.PRNGKey(1), (16, 500))
      >>> float(mlnll.linear_categorical_kl(h, w, h, w))  # a model against itself
      0.0
    """
    return compute_kl("linear_categorical_kl", student_hidden, student_weight, teacher_hidden, teacher_weight,
                      sharding=None, temperature=temperature, direction=direction, student_bias=student_bias,
                      teacher_bias=teacher_bias, where=where, reduction=reduction, block_size=block_size)
