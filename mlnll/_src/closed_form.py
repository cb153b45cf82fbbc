"""Closed-form differentiation: a log-density whose derivatives are the ones its family derives.

``closed_form(value_and_partials)`` turns a function that returns a log-density together with its
partial derivatives into a ``jax.custom_jvp`` function whose value is the (stable) log-density and
whose tangent is ``sum_i partial_i * d arg_i``. ``jax.grad``, ``jax.vjp``, ``jacfwd``, ``jacrev``
and ``hessian`` then run through the closed form: the backward pass is one multiply per argument,
not the derivative of every branch and series of the stable value. The tangent rule is plain
``jax.numpy``, so it is itself differentiable and second order keeps working (its derivative is
autodiff of the closed-form partials, not of the value).

``custom_jvp`` rather than ``custom_vjp``: forward mode (``jacfwd``, ``hessian``) must keep
working. With ``symbolic_zeros``, an argument that is not being differentiated (the targets, in a
training step) costs nothing; a partial of ``None`` marks an argument that is never
differentiable (counts), whose tangent is ignored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero


def _is_zero(tangent) -> bool:
    """A tangent that contributes nothing: symbolic zero, or the float0 tangent of an integer."""
    return isinstance(tangent, SymbolicZero) or getattr(tangent, "dtype", None) == jax.dtypes.float0


def _value_and_needed_partials(value_and_partials, statics, needed, *primals):
    """The value and, for each argument in ``needed``, its partial (a callable partial called)."""
    value, partials = value_and_partials(*statics, *primals)
    kept: list[jax.Array | None] = []
    for partial, need in zip(partials, needed, strict=True):
        if partial is None or not need:
            kept.append(None)
        else:
            kept.append(partial() if callable(partial) else partial)
    return jnp.asarray(value), tuple(kept)


def _staged(value_and_partials, statics, needed, primals):
    """``_value_and_needed_partials`` traced to one jaxpr first, then evaluated equation by equation.

    Under ``jax.grad`` the tangent rule is partially evaluated, and each ``jax.numpy`` call in it
    (itself a small jit) would be partially evaluated on its own; the staged jaxpr holds the
    primitives those calls inline to, whose partial evaluation is cheap.
    """
    fn = functools.partial(_value_and_needed_partials, value_and_partials, statics, needed)
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*primals)
    flat = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, *jax.tree.leaves(primals))
    return jax.tree.unflatten(jax.tree.structure(shape), flat)


def closed_form(value_and_partials: Callable, *, num_static: int = 0) -> Callable:
    """``f(*static, *arrays)``: ``value_and_partials(...)[0]``, differentiated by its partials.

    ``value_and_partials(*static, *arrays) -> (value, partials)`` with ``partials`` a tuple, one
    entry per array argument: ``d value / d array`` at the value's shape (broadcasting allowed) or
    with event axes after it (``value.shape + event``: a vector's, a matrix's; the tangent sums
    ``partial * d array`` over them), ``None`` for an argument whose tangent is ignored, or a
    function of no arguments returning the partial (traced only when that argument is
    differentiated: a partial that costs a pass of its own). The first ``num_static`` arguments are
    static (hashable Python values, not differentiated). The partials are computed only when the
    function is differentiated (XLA removes them from a value-only program).
    """
    static = tuple(range(num_static))

    @functools.partial(jax.custom_jvp, nondiff_argnums=static)
    def f(*args):
        return value_and_partials(*args)[0]

    def jvp(*args):
        *statics, primals, tangents = args
        needed = tuple(not _is_zero(t) for t in tangents)
        value, partials = _staged(value_and_partials, tuple(statics), needed, primals)
        out = None
        for partial, tangent in zip(partials, tangents, strict=True):
            if partial is None:
                continue
            term = partial * tangent.astype(value.dtype)
            if term.ndim > value.ndim:  # contract the event axes
                term = jnp.sum(term, axis=tuple(range(value.ndim, term.ndim)))
            out = term if out is None else out + term
        if out is None:
            out = jnp.zeros_like(value)
        return value, jnp.broadcast_to(out, value.shape).astype(value.dtype)

    f.defjvp(jvp, symbolic_zeros=True)
    functools.update_wrapper(f, value_and_partials, assigned=("__module__", "__doc__"))
    return f


def _off_support_value_and_partial(log_prob, valid):
    # d/d log_prob of where(valid, log_prob, -inf): 1 on the support, NaN off it (the convention).
    nan_off = jnp.where(valid, jnp.ones_like(log_prob), jnp.full_like(log_prob, jnp.nan))
    return jnp.where(valid, log_prob, jnp.full_like(log_prob, -jnp.inf)), (nan_off, None)


minus_inf_off_support = closed_form(_off_support_value_and_partial)
minus_inf_off_support.__doc__ = """``log_prob`` where ``valid``, ``-inf`` elsewhere; NaN derivatives off the support.

The one convention for a target outside the family's support: its log-likelihood is ``-inf``
and every derivative of it (``jax.grad``, ``jacfwd``, ``hessian``, in the outputs and the
targets) is NaN for that example, so ``optax.apply_if_finite`` and NaN checks catch it instead
of training on a plausible number; the other examples are unaffected. Call it with the
log-density computed at substituted in-support targets (the double ``where``), so the value is
finite where it is kept. A masked example (``nll(..., where=...)``) still contributes exactly 0:
``nll`` stops the cotangents of masked rows before they reach the family.
"""
