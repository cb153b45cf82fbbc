"""The conformance suite: every generic promise, checked for every row of the check table.

One table drives it: ``registry.builtin_cases()``, the ``check_cases()`` of every public family
(its random and extreme inputs, and its references: scipy.stats and the textbook formula). A
family added to mlnll with ``check_cases`` is checked here without touching this file; the family
test files keep only what is specific to one family.

Tolerances come from the one table (``conftest.RTOL``, the ``value`` column of
``mlnll._src.verify.tolerances``), times a small factor for the few roundings a comparison chains.
"""

import dataclasses
import functools
import math

import jax
import jax.extend
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlnll
from conftest import RTOL
from mlnll._src.verify import registry
from mlnll._src.verify.check_grad import expected_hessian

CASES = registry.builtin_cases()
IDS = [case.name for case in CASES]
F32, F64 = np.dtype("float32"), np.dtype("float64")
N = 16


def _f64(x):
    return np.asarray(x, np.float64)


def _float_leaves_to(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@functools.lru_cache(maxsize=None)
def jitted(family, method: str):
    """``jax.jit(family.<method>)``, compiled once per family and shape across the suite."""
    return jax.jit(getattr(family, method))


def _method(family, method: str, use_jit: bool):
    return jitted(family, method) if use_jit else getattr(family, method)


@functools.lru_cache(maxsize=None)
def _random_inputs(case, dtype: np.dtype, n: int):
    """``case.random`` compiled once per case, dtype and size (drawing eagerly costs a compile per op)."""
    return jax.jit(lambda key: case.random(key, dtype, n))


def _inputs(case, dtype, n=N, seed=0):
    return _random_inputs(case, np.dtype(dtype), n)(jax.random.PRNGKey(seed))


def _raises_not_implemented(fn, *args) -> bool:
    """Whether ``fn(*args)`` raises NotImplementedError; found by tracing alone (``eval_shape``:
    no compile, where an eager call compiles every primitive it runs)."""
    try:
        jax.eval_shape(fn, *args)
    except NotImplementedError:
        return True
    return False


def _natural_scale(family, outputs, leaf_index: int, like: np.ndarray) -> np.ndarray:
    """``sqrt(F_ii)`` laid out as gradient leaf ``leaf_index`` (the score's standard deviation):
    the closed-form Fisher information, or, for a family without one, the expected Hessian over its
    ``expectation_nodes`` (the same matrix); for a wrapper (``Censored``, ``IntervalCensored``,
    ``Truncated``: its information depends on how the data are censored) that of the wrapped family,
    whose score is the one a censored observation's is made of; zeros for a family with none."""
    try:
        fisher = _f64(jitted(family, "fisher")(outputs))
    except NotImplementedError:
        if isinstance(family, (mlnll.Censored, mlnll.IntervalCensored, mlnll.Truncated)):
            return _natural_scale(family.family, outputs, leaf_index, like)
        if not callable(getattr(family, "expectation_nodes", None)):
            return np.zeros_like(like)
        fisher = _f64(jax.jit(expected_hessian, static_argnums=(0, 2))(family, outputs, "expectation_nodes"))
    leaves = jax.tree.leaves(outputs)
    n = like.shape[0]
    sizes = [int(np.prod(np.shape(x)[1:])) for x in leaves]
    diag = fisher.reshape(n, sum(sizes), sum(sizes)) if fisher.ndim > 1 else fisher.reshape(n, 1, 1)
    root = np.sqrt(np.abs(np.diagonal(diag, axis1=1, axis2=2)))
    lo = sum(sizes[:leaf_index])
    return root[:, lo:lo + sizes[leaf_index]].reshape(like.shape)


# -- the family object --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_family_is_a_frozen_hashable_dataclass_that_conforms(case):
    family = case.family
    assert isinstance(family, mlnll.Family)
    assert dataclasses.is_dataclass(family) and not isinstance(family, type)
    copy = dataclasses.replace(family)
    assert copy == family and hash(copy) == hash(family)
    fields = dataclasses.fields(family)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(family, fields[0].name, getattr(family, fields[0].name))
    # Usable as a static argument of jit: the same object compiles once.
    assert jitted(family, "log_prob") is jitted(copy, "log_prob")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_passing_the_class_instead_of_an_instance_is_a_type_error(case):
    cls = type(case.family)
    # The class is refused before the outputs and targets are looked at.
    for make in (lambda: mlnll.nll(cls), lambda: mlnll.check_grad(cls, None, None)):
        with pytest.raises(TypeError, match=f"pass an instance: mlnll.{cls.__name__}()"):
            make()


# -- references: scipy.stats and the textbook formula ----------------------------------------------


SCIPY = [c for c in CASES if c.scipy is not None]
PLAIN = [c for c in CASES if c.plain_log_prob is not None]


# Eagerly (op by op) in float32 and under jit in both dtypes: an eager call runs the jitted program's
# operations one at a time, and where the two can differ (XLA flushing subnormals, rewriting a
# division) is float32's range; the adversarial tables run their extremes eagerly in both dtypes.
# An eager float64 pass here cost a fifth of this file's time and tested nothing new.
MODES = [(F32, False), (F32, True), (F64, True)]
MODE_IDS = ["float32-eager", "float32-jit", "float64-jit"]


@pytest.mark.parametrize(("dtype", "use_jit"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("case", SCIPY, ids=[c.name for c in SCIPY])
def test_log_prob_matches_scipy(case, dtype, use_jit):
    outputs, targets = _inputs(case, dtype)
    got = _method(case.family, "log_prob", use_jit)(outputs, targets)
    assert got.dtype == dtype and got.shape == (N,)
    want = case.scipy.log_prob(outputs, targets)
    # Judged against max(|log p|, 1): where log p crosses 0 its terms, of size ~1, set the rounding.
    scale = np.maximum(np.abs(want), 1.0)
    assert np.all(np.abs(_f64(got) - want) <= 4 * RTOL[dtype] * scale), (got, want)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("case", SCIPY, ids=[c.name for c in SCIPY])
def test_entropy_and_mean_match_scipy(case, dtype):
    outputs, _ = _inputs(case, dtype)
    family = case.family
    if not _raises_not_implemented(family.entropy, outputs):
        got = _f64(jitted(family, "entropy")(outputs))
        want = case.scipy.entropy(outputs)
        assert np.all(np.abs(got - want) <= 8 * RTOL[dtype] * np.maximum(np.abs(want), 1.0)), (got, want)
    if _raises_not_implemented(family.mean, outputs):  # no closed form (Truncated): nothing to compare
        return
    mean = _f64(jitted(family, "mean")(outputs))
    want = case.scipy.mean(outputs).reshape(mean.shape)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(mean), finite)  # NaN where the mean does not exist
    assert np.all(np.abs(mean[finite] - want[finite]) <= 8 * RTOL[dtype] * np.maximum(np.abs(want[finite]), 1.0))


@functools.partial(jax.jit, static_argnums=0)
def _plain_grad(case, outputs, targets):
    """The oracle: ``jax.grad`` of the textbook formula's summed NLL (float64 inputs)."""
    return jax.grad(lambda o: -jnp.sum(case.plain_log_prob(o, targets)))(outputs)


def _closed_and_autodiff_grads(family, outputs, targets):
    """The closed-form ``grad`` and ``jax.grad`` of the summed negative ``log_prob`` (jitted: one program)."""
    neg_log_prob = lambda o: -jnp.sum(family.log_prob(o, targets).astype(jnp.float32))  # noqa: E731
    return family.grad(outputs, targets), jax.grad(neg_log_prob)(outputs)


@pytest.mark.parametrize(("dtype", "use_jit"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("case", PLAIN, ids=[c.name for c in PLAIN])
def test_closed_form_and_jax_grad_match_autodiff_of_the_plain_formula(case, dtype, use_jit):
    """The closed form ``grad`` and ``jax.grad`` of ``log_prob`` (which runs through the family's
    derivation) against ``jax.grad`` of the textbook formula in float64, at the same inputs."""
    outputs, targets = _inputs(case, dtype)
    both = jax.jit(_closed_and_autodiff_grads, static_argnums=0) if use_jit else _closed_and_autodiff_grads
    closed, through_log_prob = both(case.family, outputs, targets)
    outputs64, targets64 = _float_leaves_to(outputs, F64), _float_leaves_to(targets, F64)
    want = _plain_grad(case, outputs64, targets64)
    for i, (c, t, w) in enumerate(zip(jax.tree.leaves(closed), jax.tree.leaves(through_log_prob), jax.tree.leaves(want))):
        w = _f64(w)
        # Each component is judged against the larger of its size and its natural scale sqrt(F_ii).
        scale = np.maximum(np.abs(w), _natural_scale(case.family, outputs64, i, w))
        for name, g in (("closed form", c), ("jax.grad", t)):
            assert g.dtype == dtype, name
            assert np.all(np.abs(_f64(g) - w) <= 8 * RTOL[dtype] * np.maximum(scale, 1e-30)), (name, g, w)


@functools.partial(jax.jit, static_argnums=0)
def _jacfwd_and_hessian(case, outputs, targets):
    """The family's and the plain formula's Hessian (first example) and jacfwd (all): one program."""
    first = jax.tree.map(lambda x: x[:1], outputs), jax.tree.map(lambda x: x[:1], targets)
    flat, unravel = jax.flatten_util.ravel_pytree(first[0])
    flat_all, unravel_all = jax.flatten_util.ravel_pytree(outputs)
    result = {}
    for name, log_prob in (("family", case.family.log_prob), ("plain", case.plain_log_prob)):
        result[name] = (jax.hessian(lambda t, f=log_prob: jnp.sum(f(unravel(t), first[1])))(flat),
                        jax.jacfwd(lambda t, f=log_prob: f(unravel_all(t), targets))(flat_all))
    # Reverse mode of the family's summed log-density, against its forward mode (the jacfwd rows summed).
    result["reverse"] = jax.grad(lambda t: jnp.sum(case.family.log_prob(unravel_all(t), targets)))(flat_all)
    return result


@pytest.mark.parametrize("case", PLAIN, ids=[c.name for c in PLAIN])
def test_jacfwd_and_hessian_match_autodiff_of_the_plain_formula(case):
    outputs, targets = _inputs(case, F64, 4)
    got = _jacfwd_and_hessian(case, outputs, targets)
    (got_h, got_j), (want_h, want_j) = [tuple(map(_f64, got[k])) for k in ("family", "plain")]
    assert np.all(np.isfinite(got_h)), got_h
    np.testing.assert_allclose(_f64(got["reverse"]), got_j.sum(axis=0), rtol=1e-10, atol=1e-14)
    scale = np.sqrt(np.abs(np.outer(np.diag(want_h), np.diag(want_h)))) + np.abs(want_h)
    assert np.all(np.abs(got_h - want_h) <= 1e-9 * np.maximum(scale, 1e-300)), (got_h, want_h)
    np.testing.assert_allclose(got_j, want_j, rtol=1e-10, atol=1e-12 * np.max(np.abs(want_j)))


def _custom_jvp_calls(jaxpr) -> int:
    """How many ``custom_jvp_call`` equations a (closed) jaxpr holds, nested programs included."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "custom_jvp_call"
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            count += _custom_jvp_calls(sub)
    return count


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_differentiates_through_a_custom_jvp(case):
    """Structure: ``log_prob`` holds a closed-form ``custom_jvp``, and ``jax.grad`` of it agrees with
    the closed-form ``grad`` to a few roundings (both are the same partials), far tighter than the
    comparison with autodiff of the textbook formula allows."""
    outputs, targets = _inputs(case, F32)
    assert _custom_jvp_calls(jax.make_jaxpr(case.family.log_prob)(outputs, targets).jaxpr) >= 1
    closed = jitted(case.family, "grad")(outputs, targets)
    through = jax.jit(jax.grad(lambda o: -jnp.sum(case.family.log_prob(o, targets))))(outputs)
    outputs64 = _float_leaves_to(outputs, F64)
    for i, (c, t) in enumerate(zip(jax.tree.leaves(closed), jax.tree.leaves(through))):
        c, t = _f64(c), _f64(t)
        scale = np.maximum(np.abs(c), _natural_scale(case.family, outputs64, i, c))
        assert np.all(np.abs(t - c) <= 4 * np.finfo(np.float32).eps * np.maximum(scale, 1e-30)), (t, c)


CONTINUOUS = [c for c in PLAIN if c.differentiable_targets]


@functools.partial(jax.jit, static_argnums=0)
def _target_grads(case, outputs, targets):
    """``jax.grad`` in the targets of the family's and the plain formula's summed log-density."""
    return tuple(jax.grad(lambda y, f=f: jnp.sum(f(outputs, y)))(targets)
                 for f in (case.family.log_prob, case.plain_log_prob))


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("case", CONTINUOUS, ids=[c.name for c in CONTINUOUS])
def test_jax_grad_in_the_targets_matches_the_plain_formula(case, dtype):
    """d log p / d y (a flow's or a reparametrised sample's gradient) through the closed form,
    against autodiff of the textbook formula in float64 at the same inputs."""
    outputs, targets = _inputs(case, dtype)
    got, _ = _target_grads(case, outputs, targets)
    _, want = _target_grads(case, _float_leaves_to(outputs, F64), _float_leaves_to(targets, F64))
    got, want = _f64(got), _f64(want)
    assert jax.tree.leaves(_target_grads(case, outputs, targets))[0].dtype == dtype
    # Judged against the larger of its size and the size of the two terms it is a difference of
    # (e.g. (a - 1)/y - b): the plain formula's own rounding is that large.
    scale = np.maximum(np.abs(want), np.max(np.abs(want)) * 1e-3)
    assert np.all(np.abs(got - want) <= 64 * RTOL[dtype] * scale), (got, want)


# Candidate targets outside some family's support, set on example 0 (every entry of its event).
_BAD_FLOATS = (-1.5, 0.5, 2.5, np.inf, -np.inf)


def _with_bad_first_target(targets, value):
    def put(y):
        y = np.array(y)  # a copy, set in numpy (an eager .at[].set compiles per dtype and shape)
        y[0] = np.asarray(value).astype(y.dtype)
        return jnp.asarray(y)
    return jax.tree.map(put, targets)


def _bad_targets(case, outputs, targets):
    """Targets whose example 0 is outside the support (log_prob is -inf there), for each candidate."""
    y = jax.tree.leaves(targets)[0]
    if jnp.issubdtype(y.dtype, jnp.integer):
        candidates = (-1, int(jax.tree.leaves(outputs)[0].shape[-1]))
    else:
        candidates = _BAD_FLOATS
    found = []
    for value in candidates:
        bad = _with_bad_first_target(targets, value)
        lp = _f64(jitted(case.family, "log_prob")(outputs, bad))
        if lp[0] == -np.inf and np.all(np.isfinite(lp[1:])):
            found.append((value, bad))
    return found


@functools.partial(jax.jit, static_argnums=0)
def _bad_target_derivatives(case, outputs, targets):
    loss = mlnll.nll(case.family, reduction="none")
    keep = jnp.arange(jax.tree.leaves(targets)[0].shape[0]) > 0
    return {
        "closed form": case.family.grad(outputs, targets),
        "jax.grad": jax.grad(lambda o: jnp.sum(case.family.log_prob(o, targets)))(outputs),
        "jacfwd of nll": jax.tree.map(lambda j: jnp.diagonal(j, 0, 0, 1).T if j.ndim == 2 else j[jnp.arange(j.shape[0]), jnp.arange(j.shape[0])],
                                      jax.jacfwd(lambda o: loss(o, targets))(outputs)),
        "masked": jax.grad(lambda o: mlnll.nll(case.family, reduction="sum")(o, targets, where=keep))(outputs),
    }


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_target_off_the_support_gives_minus_inf_and_nan_derivatives_for_its_example_only(case):
    """The one convention: log_prob -inf, a NaN gradient for that example from the closed form,
    jax.grad and jacfwd; the other examples unchanged; masked out, it contributes exactly 0."""
    outputs, targets = _inputs(case, F64, 4)
    found = _bad_targets(case, outputs, targets)
    if not found:
        pytest.skip(f"{case.name}: none of {_BAD_FLOATS} is outside the support")
    clean = _bad_target_derivatives(case, outputs, targets)
    for value, bad in found:
        got = _bad_target_derivatives(case, outputs, bad)
        for name in ("closed form", "jax.grad", "jacfwd of nll"):
            for g, c in zip(jax.tree.leaves(got[name]), jax.tree.leaves(clean[name])):
                g, c = _f64(g), _f64(c)
                assert np.all(np.isnan(g[0])), (name, value, g[0])
                np.testing.assert_allclose(g[1:], c[1:], rtol=1e-12, err_msg=f"{name} at {value}")
        for g, c in zip(jax.tree.leaves(got["masked"]), jax.tree.leaves(clean["masked"])):
            g, c = _f64(g), _f64(c)
            assert np.all(g[0] == 0), (value, g[0])
            np.testing.assert_allclose(g[1:], c[1:], rtol=1e-12)


# -- extremes and dtypes ----------------------------------------------------------------------------


def _per_example(leaf, batch_ndim):
    """Flatten a gradient leaf [*batch, *event] to [n_examples, -1]."""
    n = math.prod(leaf.shape[:batch_ndim])
    return np.asarray(leaf, np.float64).reshape(n, -1)


@functools.partial(jax.jit, static_argnums=0)
def _value_and_both_gradients(family, outputs, targets):
    """``log_prob``, ``jax.grad`` of its float64 sum and the closed-form ``grad``: one program."""
    value = family.log_prob(outputs, targets)
    autodiff = jax.grad(lambda o: jnp.sum(family.log_prob(o, targets).astype(jnp.float64)))(outputs)
    return value, autodiff, family.grad(outputs, targets)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_extreme_inputs_give_no_nan_and_finite_gradients_where_the_value_is_finite(case, dtype):
    outputs, targets = case.extreme(dtype)
    log_prob, autodiff, closed = _value_and_both_gradients(case.family, outputs, targets)
    log_prob = np.asarray(log_prob, np.float64)
    assert not np.any(np.isnan(log_prob)), log_prob
    finite = np.isfinite(log_prob).reshape(-1)
    for name, tree in (("jax.grad", autodiff), ("closed form", closed)):
        for leaf in jax.tree.leaves(tree):
            per = _per_example(leaf, log_prob.ndim)
            assert np.all(np.isfinite(per[finite])), (name, per)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_low_precision_outputs_are_computed_in_float32_and_returned_in_their_dtype(case, low):
    low = jnp.dtype(low)
    outputs, targets = _inputs(case, F32, 16)
    outputs_low = _float_leaves_to(outputs, low)
    got = jitted(case.family, "log_prob")(outputs_low, targets)
    assert got.dtype == low
    # The reference: float32 arithmetic on the same (rounded) inputs.
    want = np.asarray(jitted(case.family, "log_prob")(_float_leaves_to(outputs_low, F32), targets), np.float64)
    eps = float(jnp.finfo(low).eps)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=eps, atol=eps * 1e-3)
    grads = jax.jit(jax.grad(lambda o: jnp.sum(case.family.log_prob(o, targets).astype(F32))))(outputs_low)
    grads_ref = jax.jit(jax.grad(lambda o: jnp.sum(case.family.log_prob(o, targets))))(_float_leaves_to(outputs_low, F32))
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        assert g.dtype == low
        r = np.asarray(r, np.float64)
        scale = np.maximum(np.abs(r), np.max(np.abs(r)) * eps)  # near-zero entries: judged by the leaf's scale
        assert np.all(np.abs(np.asarray(g, np.float64) - r) <= 2 * eps * scale), (g, r)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_integer_outputs_raise_a_type_error_naming_the_argument(case):
    outputs, targets = _inputs(case, F32, 4)
    leaves, tree = jax.tree.flatten(outputs)
    for i in range(len(leaves)):
        bad = tree.unflatten([x.astype(jnp.int32) if j == i else x for j, x in enumerate(leaves)])
        with pytest.raises(TypeError, match="must be a floating array"):
            case.family.log_prob(bad, targets)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_an_outer_product_of_batch_axes_is_refused_and_shared_outputs_broadcast(case):
    outputs, targets = _inputs(case, F32, 4)
    # Outputs [4, 1, *event] against targets [4, *event] would broadcast to [4, 4]: refused.
    with_axis = jax.tree.map(lambda x: x[:, None], outputs)
    with pytest.raises(ValueError, match="outer product"):
        case.family.log_prob(with_axis, targets)
    loss = mlnll.nll(case.family, reduction="none")
    with pytest.raises(ValueError, match="outer product"):
        loss(with_axis, targets)
    for name in ("where", "weights"):
        mask = jnp.ones((4, 1), bool if name == "where" else F32)
        with pytest.raises(ValueError, match=f"{name} shape \\(4, 1\\) does not broadcast.*outer product"):
            loss(outputs, targets, **{name: mask})
    # Broadcasting that keeps one side's shape still works: one example's outputs for every target.
    shared = jax.tree.map(lambda x: x[0], outputs)
    got = _f64(case.family.log_prob(shared, targets))
    want = _f64(case.family.log_prob(jax.tree.map(lambda x: jnp.broadcast_to(x[0], x.shape), outputs), targets))
    assert got.shape == (4,)
    np.testing.assert_array_equal(got, want)


# -- sampling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_samples_lie_in_the_support(case):
    outputs, _ = _inputs(case, F32, 8)
    if _raises_not_implemented(case.family.sample, jax.random.PRNGKey(1), outputs):
        pytest.skip(f"{case.name} has no sampler (it says why)")
    draws = jax.jit(lambda k, o: case.family.sample(k, o, sample_shape=(256,)))(jax.random.PRNGKey(1), outputs)
    log_prob = _f64(jax.jit(jax.vmap(case.family.log_prob, in_axes=(None, 0)))(outputs, draws))
    assert log_prob.shape[0] == 256
    assert np.all(log_prob > -np.inf), f"{np.mean(log_prob == -np.inf):.1%} of the draws are outside the support"


# -- properties drawn by hypothesis -----------------------------------------------------------------


def _kl_or_none(family, p, q):
    """``family.kl(p, q)`` jitted (one compile for both calls, not one per primitive), or None
    where the family has no closed-form KL."""
    try:
        return np.asarray(jitted(family, "kl")(p, q), np.float64)
    except NotImplementedError:
        return None


@functools.partial(jax.jit, static_argnums=0)
def _transformed(family, outputs, targets, perm):
    """Everything the property test compares, compiled once per family (shapes are fixed).

    Forward against reverse mode and the Hessian are not repeated here: both are compared with
    autodiff of the textbook formula by test_closed_form_and_jax_grad_match_autodiff_of_the_plain_formula
    and test_jacfwd_and_hessian_match_autodiff_of_the_plain_formula (the costliest programs of the
    suite to compile, once per family is enough).
    """
    loss = mlnll.nll(family)
    take = lambda tree: jax.tree.map(lambda x: x[perm], tree)  # noqa: E731
    return {
        "jit": family.log_prob(outputs, targets),
        "vmap": jax.vmap(family.log_prob)(outputs, targets),
        "mean": loss(outputs, targets),
        "mean_permuted": loss(take(outputs), take(targets)),
    }


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_properties(case, seed):
    family = case.family
    key_p, key_q, key_perm = jax.random.split(jax.random.PRNGKey(seed), 3)
    outputs, targets = _random_inputs(case, F64, 6)(key_p)
    values = family.log_prob(outputs, targets)
    got = _transformed(family, outputs, targets, jax.random.permutation(key_perm, values.shape[0]))
    # jit equals no-jit; vmap over examples equals the batched call.
    np.testing.assert_allclose(got["jit"], values, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got["vmap"], values, rtol=1e-12, atol=1e-300)
    # The mean loss does not depend on the order of the batch.
    np.testing.assert_allclose(got["mean_permuted"], got["mean"], rtol=1e-13)
    # KL(p, p) = 0 and KL(p, q) >= 0 where the family has a closed-form KL.
    q_outputs, _ = _random_inputs(case, F64, 6)(key_q)
    kl_pp = _kl_or_none(family, outputs, outputs)
    if kl_pp is not None:
        np.testing.assert_allclose(kl_pp, 0.0, atol=1e-12)
        assert np.all(_kl_or_none(family, outputs, q_outputs) >= -1e-12)


# -- the table itself ---------------------------------------------------------------------------------


def test_every_public_family_has_check_cases():
    families = [obj for name in mlnll.__all__ if isinstance(obj := getattr(mlnll, name), type)
                and callable(getattr(obj, "log_prob", None)) and name != "Family"]
    covered = {type(c.family) for c in CASES}
    assert [f.__name__ for f in families if f not in covered] == []


def test_random_and_extreme_inputs_share_event_shapes():
    for case in CASES:
        random = jax.eval_shape(lambda k, case=case: case.random(k, F32, 3), jax.random.PRNGKey(0))
        extreme = case.extreme(F32)
        for r, e in zip(jax.tree.leaves(random), jax.tree.leaves(extreme)):
            assert r.shape[1:] == np.shape(e)[1:], case.name
