"""``mlnll.checked``: every kind of bad value it documents, in every context a loss runs in.

Each bad input must stop the computation with the argument, the problem, the first offending flat
index and its value: ``mlnll.CheckError`` when called eagerly, a ``JaxRuntimeError`` carrying the
same text from inside compiled code. Good input passes through with the loss's own value.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import mlnll

F32 = jnp.float32
Z = jax.random.normal(jax.random.PRNGKey(0), (4, 5), F32)
LABELS = jnp.array([0, 1, 2, 3])
VEC = jnp.array([0.5, -1.0, 2.0, 0.0], F32)
PROBS = jnp.full((4, 5), 0.2, F32)

# (what is wrong, the loss, outputs, targets, weights, the message it must contain)
BAD_VALUES = [
    ("label out of range", mlnll.nll(mlnll.Categorical()), Z, jnp.array([0, 1, 7, 2]), None,
     "targets: label out of range at flat index 2: got 7, expected 0..4"),
    ("negative label that is not ignore_index", mlnll.nll(mlnll.Categorical(), ignore_index=-100), Z,
     jnp.array([0, -100, -1, 2]), None, "targets: label out of range at flat index 2: got -1, expected 0..4 or ignore_index=-100"),
    ("NaN logit", mlnll.nll(mlnll.Categorical()), Z.at[1, 3].set(jnp.nan), LABELS, None,
     "outputs (leaf 0): non-finite at flat index 8: got nan"),
    ("+inf logit", mlnll.nll(mlnll.Bernoulli()), VEC.at[3].set(jnp.inf), jnp.zeros(4, F32), None,
     "outputs (leaf 0): non-finite at flat index 3: got inf"),
    ("-inf log_scale", mlnll.nll(mlnll.Normal()), (VEC, VEC.at[1].set(-jnp.inf)), VEC, None,
     "outputs (leaf 1): non-finite at flat index 1: got -inf"),
    ("soft targets not summing to 1", mlnll.nll(mlnll.Categorical()), Z, PROBS.at[2, 0].set(0.5), None,
     "targets: soft targets do not sum to 1 at flat index 2: the sum is 1.3"),
    ("soft target off the simplex", mlnll.nll(mlnll.Categorical()), Z, PROBS.at[1, 0].set(1.2).at[1, 1].set(-0.2), None,
     "targets: soft target outside [0, 1] at flat index 5: got 1.2"),
    ("NaN soft target", mlnll.nll(mlnll.Categorical()), Z, PROBS.at[3, 4].set(jnp.nan), None,
     "targets: soft target outside [0, 1] at flat index 19: got nan"),
    ("negative weight", mlnll.nll(mlnll.Categorical()), Z, LABELS, jnp.array([1.0, 1.0, 0.0, -0.5], F32),
     "weights: negative or not finite at flat index 3: got -0.5"),
    ("NaN weight", mlnll.nll(mlnll.Bernoulli()), VEC, jnp.zeros(4, F32), jnp.array([1.0, jnp.nan, 1.0, 1.0], F32),
     "weights: negative or not finite at flat index 1: got nan"),
    ("probability target above 1", mlnll.nll(mlnll.Bernoulli()), VEC, jnp.array([0.0, 1.0, 1.5, 0.5], F32), None,
     "targets: outside the support at flat index 2: got 1.5"),
    ("negative count", mlnll.nll(mlnll.Poisson()), VEC, jnp.array([0.0, 3.0, 1.0, -1.0], F32), None,
     "targets: outside the support at flat index 3: got -1.0"),
    ("NaN target of a continuous family", mlnll.nll(mlnll.Normal()), (VEC, VEC), VEC.at[0].set(jnp.nan), None,
     "targets: outside the support at flat index 0: got nan"),
]


def _sharded(x):
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))


def _stack(tree):
    return jax.tree.map(lambda x: jnp.stack([x, x]), tree)


# How each context calls the checked loss ``safe`` on (outputs, targets, weights): eagerly, in a
# user's jit, under grad and value_and_grad, vmap (a leading batch of two copies), lax.scan (a
# training loop of two steps), jax.checkpoint, and on sharded inputs.
CONTEXTS = {
    "eager": lambda safe, o, t, w: safe(o, t, weights=w),
    "jit": lambda safe, o, t, w: jax.jit(lambda o, t, w: safe(o, t, weights=w))(o, t, w),
    "grad": lambda safe, o, t, w: jax.jit(jax.grad(lambda o: safe(o, t, weights=w)))(o),
    "value_and_grad": lambda safe, o, t, w: jax.value_and_grad(lambda o: safe(o, t, weights=w))(o),
    "vmap": lambda safe, o, t, w: jax.jit(jax.vmap(lambda o, t, w: safe(o, t, weights=w)))(
        _stack(o), _stack(t), None if w is None else _stack(w)),
    "scan": lambda safe, o, t, w: jax.lax.scan(lambda c, _: (c + safe(o, t, weights=w), None), 0.0, None, length=2)[0],
    "checkpoint": lambda safe, o, t, w: jax.jit(jax.grad(jax.checkpoint(lambda o: safe(o, t, weights=w))))(o),
    "sharded": lambda safe, o, t, w: jax.jit(lambda o, t, w: safe(o, t, weights=w))(
        jax.tree.map(_sharded, o), _sharded(t), None if w is None else _sharded(w)),
}


@pytest.mark.parametrize("context", list(CONTEXTS))
@pytest.mark.parametrize("loss, outputs, targets, weights, message", [c[1:] for c in BAD_VALUES],
                         ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_stops_the_computation_naming_it(loss, outputs, targets, weights, message, context):
    safe = mlnll.checked(loss)
    expected = mlnll.CheckError if context == "eager" else (mlnll.CheckError, jax.errors.JaxRuntimeError)
    with pytest.raises(expected, match=re.escape(message)):
        jax.block_until_ready(CONTEXTS[context](safe, outputs, targets, weights))


GOOD = [
    (mlnll.nll(mlnll.Categorical(), ignore_index=-100), Z.at[0, 1].set(-jnp.inf), jnp.array([0, -100, 2, 4]), None),
    (mlnll.nll(mlnll.Categorical()), Z, PROBS, jnp.array([1.0, 0.0, 2.0, 1.0], F32)),
    (mlnll.nll(mlnll.Bernoulli()), VEC.at[2].set(-jnp.inf), jnp.array([0.0, 1.0, 0.0, 0.5], F32), None),
    (mlnll.nll(mlnll.Normal()), (VEC, VEC), VEC, None),
]


@pytest.mark.parametrize("context", list(CONTEXTS))
@pytest.mark.parametrize("loss, outputs, targets, weights", GOOD, ids=["ignore_index", "soft", "bernoulli", "normal"])
def test_good_values_pass_through_with_the_losss_own_result(loss, outputs, targets, weights, context):
    got = CONTEXTS[context](mlnll.checked(loss), outputs, targets, weights)
    want = CONTEXTS[context](lambda o, t, weights=None: loss(o, t, weights=weights), outputs, targets, weights)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_checked_needs_a_loss_and_the_unchecked_loss_is_unchanged():
    with pytest.raises(TypeError, match=re.escape("checked needs a loss made by mlnll.nll(...); got function.")):
        mlnll.checked(lambda o, t: 0.0)
    loss = mlnll.nll(mlnll.Categorical())
    safe = mlnll.checked(loss)
    assert safe.loss is loss
    # The unchecked loss compiles to a program without a host callback.
    assert "callback" not in jax.jit(loss).lower(Z, LABELS).as_text()
    assert "callback" in jax.jit(safe).lower(Z, LABELS).as_text()
