"""The fast Categorical paths keep the accuracy promises of the slow, obvious ones.

``cross_entropy_logits`` takes integer labels (no one-hot: a max, one sum and the gradient's pass)
or dense target weights; ``numerics.max_and_rest`` finds the argmax's neighbours' sum without an
argmax. Both must keep relative accuracy for confident predictions, finite results at +-3e38 and
-inf logits, and exact derivatives of every order (``jax.hessian`` goes through the custom_jvp).
"""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import scipy.special

import mlnll
from conftest import RTOL
from mlnll._src import numerics
from mlnll._src.families.categorical import cross_entropy_logits

CONFIDENT = float(mpmath.log1p(2 * mpmath.exp(-20)))  # -log p_0 at logits (20, 0, 0): 4.1223e-9


def plain_nll(z, y):
    """The textbook -log softmax(z)_y, differentiated by autodiff as the oracle (float64)."""
    return jnp.log(jnp.sum(jnp.exp(z))) - z[y]


def _labels_path(z, y):
    return cross_entropy_logits(z, y)


def _dense_path(z, y):
    return cross_entropy_logits(z, jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype))


def _public(z, y):
    return mlnll.nll(mlnll.Categorical(), reduction="none")(z, y)


PATHS = {"labels": _labels_path, "dense": _dense_path, "nll(Categorical())": _public}


@pytest.mark.parametrize("path", PATHS)
def test_confident_prediction_value_and_gradient_keep_relative_accuracy(path):
    f = PATHS[path]
    z = jnp.array([[20.0, 0.0, 0.0]], jnp.float32)
    y = jnp.array([0])
    value = f(z, y)
    assert value.dtype == jnp.float32
    np.testing.assert_allclose(float(value[0]), CONFIDENT, rtol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(f(a, y)))(z)
    np.testing.assert_allclose(np.asarray(grad[0], np.float64), [-CONFIDENT, CONFIDENT / 2, CONFIDENT / 2], rtol=1e-6)


def test_confident_prediction_with_bfloat16_logits():
    z = jnp.array([[20.0, 0.0, 0.0]], jnp.bfloat16)  # 20 and 0 are exact in bfloat16
    y = jnp.array([0])
    np.testing.assert_allclose(float(cross_entropy_logits(z, y)[0]), CONFIDENT, rtol=1e-6)
    grad = jax.grad(lambda a: jnp.sum(cross_entropy_logits(a, y)))(z)
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(grad[0], np.float64), [-CONFIDENT, CONFIDENT / 2, CONFIDENT / 2], rtol=2.0**-8)


EXTREME_LOGITS = [
    [3e38, -3e38, 0.0],
    [-3e38, 3e38, 3e38],
    [-jnp.inf, 0.0, 1.0],
    [1e4, -1e4, 0.0],
    [0.0, 0.0, 0.0],
    [-jnp.inf, -jnp.inf, 5.0],
]
EXTREME_LABELS = [0, 1, 2, 1, 1, 2]
# -log p_y and its gradient p - onehot(y), exact.
P_MIDDLE = float(1 / (1 + mpmath.e))  # softmax(0, 1)_0
EXTREME_WANT = [
    (0.0, [0.0, 0.0, 0.0]),
    (float(mpmath.log(2)), [0.0, -0.5, 0.5]),
    (float(mpmath.log1p(mpmath.exp(-1))), [0.0, P_MIDDLE, -P_MIDDLE]),
    (2e4, [1.0, -1.0, 0.0]),
    (float(mpmath.log(3)), [1 / 3, -2 / 3, 1 / 3]),
    (0.0, [0.0, 0.0, 0.0]),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_logits_give_exact_finite_values_and_gradients(path, dtype):
    f = PATHS[path]
    z = jnp.array(EXTREME_LOGITS, dtype)
    y = jnp.array(EXTREME_LABELS)
    values, grads = jax.jit(lambda a: (f(a, y), jax.grad(lambda b: jnp.sum(f(b, y)))(a)))(z)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(values, [v for v, _ in EXTREME_WANT], rtol=rtol, atol=0)
    np.testing.assert_allclose(grads, [g for _, g in EXTREME_WANT], rtol=rtol, atol=1e-300)


def _random_logits(key, shape=(6, 7)):
    kz, ky = jax.random.split(key)
    return 3 * jax.random.normal(kz, shape, jnp.float64), jax.random.randint(ky, shape[:-1], 0, shape[-1])


@pytest.mark.parametrize("path", ["labels", "dense"])
def test_values_gradients_and_hessians_match_plain_formula_float64(path):
    f = PATHS[path]
    z, y = _random_logits(jax.random.PRNGKey(0))
    plain = jax.vmap(plain_nll)

    @jax.jit
    def derivatives(z):
        grad = jax.grad(lambda a: jnp.sum(f(a, y)))(z)
        # Second order through the custom_jvp: forward-over-reverse and forward-over-forward.
        one = lambda a: f(a[None], y[:1])[0]  # noqa: E731
        return f(z, y), grad, jax.hessian(one)(z[0]), jax.jacfwd(jax.jacfwd(one))(z[0])

    value, grad, hessian, hessian_fwd = derivatives(z)
    np.testing.assert_allclose(value, plain(z, y), rtol=1e-13)
    np.testing.assert_allclose(grad, jax.grad(lambda a: jnp.sum(plain(a, y)))(z), rtol=1e-12, atol=1e-15)
    want = jax.hessian(plain_nll)(z[0], y[0])
    np.testing.assert_allclose(hessian, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hessian_fwd, want, rtol=1e-12, atol=1e-15)


def test_labels_path_on_bfloat16_matches_float64_oracle():
    z, y = _random_logits(jax.random.PRNGKey(1), (64, 50))
    z16 = z.astype(jnp.bfloat16)
    wide = z16.astype(jnp.float64)
    value, grad = jax.jit(jax.value_and_grad(lambda a: jnp.sum(cross_entropy_logits(a, y))))(z16)
    want_value, want = jax.jit(jax.value_and_grad(lambda a: jnp.sum(jax.vmap(plain_nll)(a, y))))(wide)
    np.testing.assert_allclose(float(value), float(want_value), rtol=2e-6)
    assert np.linalg.norm(np.asarray(grad, np.float64) - want) <= 2.0**-8 * np.linalg.norm(want)


def test_labels_path_beyond_exact_float32_class_indices():
    # More than 2**24 classes: indices are no longer exact in float32, so the target is dropped by
    # a compare instead of the |2k - 2y| trick. Uniform logits: -log p = log C, grad 1/C - onehot.
    num_classes = 2**24 + 6
    z = jnp.zeros((1, num_classes), jnp.float32)
    y = jnp.array([num_classes - 3])
    value, grad = jax.value_and_grad(lambda a: jnp.sum(cross_entropy_logits(a, y)))(z)
    np.testing.assert_allclose(float(value), np.log(num_classes), rtol=1e-6)
    assert float(grad[0, y[0]]) == pytest.approx(1 / num_classes - 1, rel=1e-6)
    assert float(grad[0, y[0] - 1]) == pytest.approx(1 / num_classes, rel=1e-5)


def test_out_of_range_labels_are_clipped_not_read_out_of_bounds():
    z, _ = _random_logits(jax.random.PRNGKey(2))
    y = jnp.array([-1, 7, 100, 0, 3, 6])
    values = cross_entropy_logits(z, y)
    grads = jax.grad(lambda a: jnp.sum(cross_entropy_logits(a, y)))(z)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    # nll(Categorical()) marks them: infinite loss, and a zero gradient for those rows.
    loss = mlnll.nll(mlnll.Categorical(), reduction="none")
    assert np.all(np.isinf(loss(z, y)[:3])) and np.all(np.isfinite(loss(z, y)[3:]))


# -- numerics.max_and_rest, log_softmax, logsumexp -----------------------------------------------


def test_max_and_rest_unique_max_and_ties():
    z = jnp.array([[20.0, 0.0, 0.0], [1.0, 1.0, -1.0], [2.0, 2.0, 2.0], [-jnp.inf, 3.0, -jnp.inf]], jnp.float32)
    top, shifted, rest, is_max = numerics.max_and_rest(z)
    np.testing.assert_array_equal(top[:, 0], [20.0, 1.0, 2.0, 3.0])
    # rest = sum_{k != a} exp(z_k - z_a) for one argmax a: exp(-20) twice, then 1 + exp(-2), then 2, then 0.
    want = [2 * float(mpmath.exp(-20)), 1 + float(mpmath.exp(-2)), 2.0, 0.0]
    np.testing.assert_allclose(rest[:, 0], want, rtol=1e-6)
    # is_max marks the argmax only where it is unique.
    np.testing.assert_array_equal(is_max, [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]])
    assert float(shifted[0, 0]) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rest_of_max_when_the_recomputed_top_is_an_ulp_off(dtype):
    # XLA may compute the logits twice (once for the max, once for logits - max) and round them
    # differently: jax 0.6.1 does for logits drawn inside the same jit. The top entry of shifted is
    # then +-ulp, not 0; rest must still be sum_k exp(shifted_k) - 1, to rounding.
    eps = float(np.finfo(dtype).eps)
    others = np.array([-0.3, -1.2, -2.5], dtype)
    for top in (eps, -eps, 4 * eps, -4 * eps):
        shifted = jnp.asarray(np.concatenate([[dtype(top)], others]), dtype)
        rest, _ = jax.jit(numerics.rest_of_max)(shifted)
        want = float(mpmath.fsum([mpmath.exp(float(v)) for v in np.asarray(shifted)]) - 1)
        # absolute rounding of a sum of four terms of size <= 1, relative to a rest of about 1.1
        np.testing.assert_allclose(float(rest[0]), want, rtol=8 * eps)


def test_log_softmax_and_logsumexp_match_scipy_and_keep_relative_accuracy():
    z, _ = _random_logits(jax.random.PRNGKey(3), (5, 9))
    log_p, lse, log_p_t = jax.jit(lambda z: (numerics.log_softmax(z), numerics.logsumexp(z), numerics.log_softmax(z.T, axis=0)))(z)
    np.testing.assert_allclose(log_p, scipy.special.log_softmax(np.asarray(z), axis=-1), rtol=1e-13)
    np.testing.assert_allclose(lse, scipy.special.logsumexp(np.asarray(z), axis=-1), rtol=1e-14)
    np.testing.assert_allclose(log_p_t, scipy.special.log_softmax(np.asarray(z).T, axis=0), rtol=1e-13)
    confident = jax.jit(numerics.log_softmax)(jnp.array([20.0, 0.0, 0.0], jnp.float32))
    np.testing.assert_allclose(-float(confident[0]), CONFIDENT, rtol=1e-6)


def test_log_softmax_derivatives_by_autodiff_are_exact():
    z, _ = _random_logits(jax.random.PRNGKey(4), (7,))
    tied = jnp.array([1.0, 1.0, 0.0], jnp.float64)
    jacobian, hessian, grad_tied = jax.jit(
        lambda z, t: (jax.jacobian(numerics.log_softmax)(z), jax.hessian(numerics.logsumexp)(z), jax.grad(numerics.logsumexp)(t))
    )(z, tied)
    p = jax.nn.softmax(z)
    np.testing.assert_allclose(jacobian, np.eye(7) - p[None, :], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(hessian, np.diag(p) - np.outer(p, p), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(grad_tied, jax.nn.softmax(tied), rtol=1e-14)
