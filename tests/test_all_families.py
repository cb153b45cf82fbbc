"""Generic promises, checked for every family in the check table (mlnll._src.cases.CASES):
extreme inputs, low-precision dtypes, and properties drawn by hypothesis."""

import functools
import math

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mlnll
from mlnll._src.cases import CASES

IDS = [case.name for case in CASES]
F32, F64 = np.dtype("float32"), np.dtype("float64")


def _float_leaves_to(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def _sum_log_prob(family, outputs, targets):
    return jnp.sum(family.log_prob(outputs, targets).astype(jnp.float64))


def _per_example(leaf, batch_ndim):
    """Flatten a gradient leaf [*batch, *event] to [n_examples, -1]."""
    n = math.prod(leaf.shape[:batch_ndim])
    return np.asarray(leaf, np.float64).reshape(n, -1)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_extreme_inputs_give_no_nan_and_finite_gradients_where_the_value_is_finite(case, dtype):
    outputs, targets = case.extreme(dtype)
    log_prob = np.asarray(case.family.log_prob(outputs, targets), np.float64)
    assert not np.any(np.isnan(log_prob)), log_prob
    finite = np.isfinite(log_prob).reshape(-1)
    autodiff = jax.grad(lambda o: _sum_log_prob(case.family, o, targets))(outputs)
    closed = case.family.grad(outputs, targets)
    for name, tree in (("jax.grad", autodiff), ("closed form", closed)):
        for leaf in jax.tree.leaves(tree):
            per = _per_example(leaf, log_prob.ndim)
            assert not np.any(np.isnan(per[finite])), (name, per)
            assert np.all(np.isfinite(per[finite])), (name, per)


@pytest.mark.parametrize("low", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_low_precision_outputs_are_computed_in_float32_and_returned_in_their_dtype(case, low):
    low = jnp.dtype(low)
    outputs, targets = case.random(jax.random.PRNGKey(0), F32, 16)
    outputs_low = _float_leaves_to(outputs, low)
    got = case.family.log_prob(outputs_low, targets)
    assert got.dtype == low
    # The reference: float32 arithmetic on the same (rounded) inputs.
    want = np.asarray(case.family.log_prob(_float_leaves_to(outputs_low, F32), targets), np.float64)
    eps = float(jnp.finfo(low).eps)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=eps, atol=eps * 1e-3)
    grads = jax.grad(lambda o: jnp.sum(case.family.log_prob(o, targets).astype(F32)))(outputs_low)
    grads_ref = jax.grad(lambda o: jnp.sum(case.family.log_prob(o, targets)))(_float_leaves_to(outputs_low, F32))
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        assert g.dtype == low
        r = np.asarray(r, np.float64)
        scale = np.maximum(np.abs(r), np.max(np.abs(r)) * eps)  # near-zero entries: judged by the leaf's scale
        assert np.all(np.abs(np.asarray(g, np.float64) - r) <= 2 * eps * scale), (g, r)


def _kl_or_none(family, p, q):
    try:
        return np.asarray(family.kl(p, q), np.float64)
    except NotImplementedError:
        return None


@functools.partial(jax.jit, static_argnums=0)
def _transformed(family, outputs, targets, perm):
    """Everything the property test compares, compiled once per family (shapes are fixed)."""
    loss = mlnll.nll(family)
    take = lambda tree: jax.tree.map(lambda x: x[perm], tree)  # noqa: E731
    flat, unravel = jax.flatten_util.ravel_pytree(outputs)
    f = lambda theta: loss(unravel(theta), targets)  # noqa: E731
    first = jax.tree.map(lambda x: x[:1], outputs), jax.tree.map(lambda x: x[:1], targets)
    flat1, unravel1 = jax.flatten_util.ravel_pytree(first[0])
    return {
        "jit": family.log_prob(outputs, targets),
        "vmap": jax.vmap(family.log_prob)(outputs, targets),
        "mean": loss(outputs, targets),
        "mean_permuted": loss(take(outputs), take(targets)),
        "jacfwd": jax.jacfwd(f)(flat),
        "grad": jax.grad(f)(flat),
        "hessian": jax.hessian(lambda theta: loss(unravel1(theta), first[1]))(flat1),
    }


@pytest.mark.parametrize("case", CASES, ids=IDS)
@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_properties(case, seed):
    family = case.family
    key_p, key_q, key_perm = jax.random.split(jax.random.PRNGKey(seed), 3)
    outputs, targets = case.random(key_p, F64, 6)
    values = family.log_prob(outputs, targets)
    got = _transformed(family, outputs, targets, jax.random.permutation(key_perm, values.shape[0]))
    # jit equals no-jit; vmap over examples equals the batched call.
    np.testing.assert_allclose(got["jit"], values, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got["vmap"], values, rtol=1e-12, atol=1e-300)
    # The mean loss does not depend on the order of the batch.
    np.testing.assert_allclose(got["mean_permuted"], got["mean"], rtol=1e-13)
    # Forward mode equals reverse mode, and the Hessian of one example is finite.
    np.testing.assert_allclose(got["jacfwd"], got["grad"], rtol=1e-10, atol=1e-14)
    assert np.all(np.isfinite(got["hessian"]))
    # KL(p, p) = 0 and KL(p, q) >= 0 where the family has a closed-form KL.
    q_outputs, _ = case.random(key_q, F64, 6)
    kl_pp = _kl_or_none(family, outputs, outputs)
    if kl_pp is not None:
        np.testing.assert_allclose(kl_pp, 0.0, atol=1e-12)
        assert np.all(_kl_or_none(family, outputs, q_outputs) >= -1e-12)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), temperature=st.floats(0.1, 20.0))
def test_categorical_information_identities(seed, temperature):
    kp, kq, ky = jax.random.split(jax.random.PRNGKey(seed), 3)
    zp = temperature * jax.random.normal(kp, (8, 6), F64)
    zq = temperature * jax.random.normal(kq, (8, 6), F64)
    fam = mlnll.Categorical()
    p = jax.nn.softmax(zp)
    # CE = H + KL, H <= log C, KL >= 0.
    np.testing.assert_allclose(
        mlnll.cross_entropy_with_logits(p, zq), fam.entropy(zp) + fam.kl(zp, zq), rtol=1e-10, atol=1e-12
    )
    assert np.all(np.asarray(fam.entropy(zp)) <= math.log(6) + 1e-12)
    assert np.all(np.asarray(fam.kl(zp, zq)) >= 0)
    # The gradient sums to 0 over classes: softmax and onehot both sum to 1.
    g = fam.grad(zp, jax.random.randint(ky, (8,), 0, 6))
    np.testing.assert_allclose(jnp.sum(g, axis=-1), 0.0, atol=1e-15)
