"""``mlnll.checked``: every kind of bad value it documents, in every context a loss runs in.

Each bad input must stop the computation with the argument, the problem, the first offending flat
index and its value: ``mlnll.CheckError`` when called eagerly, a ``JaxRuntimeError`` carrying the
same text from inside compiled code. Good input passes through with the loss's own value.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import mlnll
from mlnll._src.verify.check_grad import x64_scope

F32 = jnp.float32
Z = jax.random.normal(jax.random.PRNGKey(0), (4, 5), F32)
LABELS = jnp.array([0, 1, 2, 3])
VEC = jnp.array([0.5, -1.0, 2.0, 0.0], F32)
PROBS = jnp.full((4, 5), 0.2, F32)

# (what is wrong, the loss, outputs, targets, weights, where, the message it must contain)
BAD_VALUES = [
    ("label out of range", mlnll.nll(mlnll.Categorical()), Z, jnp.array([0, 1, 7, 2]), None, None,
     "targets: label out of range at flat index 2: got 7, expected 0..4"),
    ("negative label that is not ignore_index", mlnll.nll(mlnll.Categorical(), ignore_index=-100), Z,
     jnp.array([0, -100, -1, 2]), None, None,
     "targets: label out of range at flat index 2: got -1, expected 0..4 or ignore_index=-100"),
    ("NaN logit", mlnll.nll(mlnll.Categorical()), Z.at[1, 3].set(jnp.nan), LABELS, None, None,
     "outputs (leaf 0): non-finite at flat index 8: got nan"),
    ("every logit -inf", mlnll.nll(mlnll.Categorical()), Z.at[2].set(-jnp.inf), LABELS, None, None,
     "outputs (leaf 0): every logit is -inf (no class possible) at flat index 2: the max is -inf"),
    ("label of a -inf class", mlnll.nll(mlnll.Categorical()), Z.at[1, 1].set(-jnp.inf), LABELS, None, None,
     "targets: probability 0 (the logit is -inf) at flat index 1: got 1"),
    ("+inf logit", mlnll.nll(mlnll.Bernoulli()), VEC.at[3].set(jnp.inf), jnp.zeros(4, F32), None, None,
     "outputs (leaf 0): non-finite at flat index 3: got inf"),
    ("-inf log_scale", mlnll.nll(mlnll.Normal()), (VEC, VEC.at[1].set(-jnp.inf)), VEC, None, None,
     "outputs (leaf 1): non-finite at flat index 1: got -inf"),
    ("soft targets not summing to 1", mlnll.nll(mlnll.Categorical()), Z, PROBS.at[2, 0].set(0.5), None, None,
     "targets: soft targets do not sum to 1 at flat index 2: the sum is 1.3"),
    ("soft target off the simplex", mlnll.nll(mlnll.Categorical()), Z,
     PROBS.at[1, 0].set(1.5).at[1, 1].set(-0.5).at[1, 2:].set(0.0), None, None,
     "targets: soft target outside [0, 1] at flat index 5: got 1.5"),
    ("NaN soft target", mlnll.nll(mlnll.Categorical()), Z, PROBS.at[3, 4].set(jnp.nan), None, None,
     "targets: soft target outside [0, 1] at flat index 19: got nan"),
    ("soft target on a -inf class", mlnll.nll(mlnll.Categorical()), Z.at[0, 2].set(-jnp.inf), PROBS, None, None,
     "targets: probability 0 (the logit is -inf) at flat index 2: got 0.2"),
    ("negative weight", mlnll.nll(mlnll.Categorical()), Z, LABELS, jnp.array([1.0, 1.0, 0.0, -0.5], F32), None,
     "weights: negative or not finite at flat index 3: got -0.5"),
    ("NaN weight", mlnll.nll(mlnll.Bernoulli()), VEC, jnp.zeros(4, F32), jnp.array([1.0, jnp.nan, 1.0, 1.0], F32),
     None, "weights: negative or not finite at flat index 1: got nan"),
    ("probability target above 1", mlnll.nll(mlnll.Bernoulli()), VEC, jnp.array([0.0, 1.0, 1.5, 0.5], F32), None,
     None, "targets: outside the support at flat index 2: got 1.5"),
    ("negative count", mlnll.nll(mlnll.Poisson()), VEC, jnp.array([0.0, 3.0, 1.0, -1.0], F32), None, None,
     "targets: outside the support at flat index 3: got -1.0"),
    ("NaN target of a continuous family", mlnll.nll(mlnll.Normal()), (VEC, VEC), VEC.at[0].set(jnp.nan), None,
     None, "targets: outside the support at flat index 0: got nan"),
    ("NaN in a vector target", mlnll.nll(mlnll.MultivariateNormal()), (jnp.zeros((2, 3), F32), jnp.zeros((2, 3, 3), F32)),
     jnp.zeros((2, 3), F32).at[1, 2].set(jnp.nan), None, None, "targets: NaN at flat index 5: got nan"),
    ("vector target outside the support", mlnll.nll(mlnll.MultivariateNormal()),
     (jnp.zeros((2, 3), F32), jnp.zeros((2, 3, 3), F32)), jnp.zeros((2, 3), F32).at[1, 2].set(jnp.inf), None, None,
     "targets: outside the support at flat index 1 (an example of vector targets): log_prob is -inf"),
    ("bad rows kept by where and weights", mlnll.nll(mlnll.Categorical()), Z.at[0].set(jnp.nan).at[2].set(-jnp.inf),
     LABELS, jnp.array([0.0, 1.0, 1.0, 1.0], F32), jnp.array([True, True, True, False]),
     "outputs (leaf 0): every logit is -inf (no class possible) at flat index 2: the max is -inf"),
]


def _sharded(x):
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))


def _stack(tree):
    return jax.tree.map(lambda x: jnp.stack([x, x]), tree)


# How each context calls a loss ``f`` (checked or not) on (outputs, targets, weights, where):
# eagerly, in a user's jit, under grad and value_and_grad (each in the user's jit), vmap (a leading batch of two copies),
# lax.scan (a training loop of two steps), jax.checkpoint, and on sharded inputs. Each context's
# program is built once per loss (``_program``), so cases with the same loss and shapes share one
# compilation.
def _call(f):
    return lambda o, t, w, m: f(o, t, weights=w, where=m)


_BUILD = {
    "eager": _call,
    "jit": lambda f: jax.jit(_call(f)),
    "grad": lambda f: jax.jit(jax.grad(_call(f))),
    "value_and_grad": lambda f: jax.jit(jax.value_and_grad(_call(f))),
    "vmap": lambda f: jax.jit(jax.vmap(_call(f))),
    "scan": lambda f: jax.jit(lambda o, t, w, m: jax.lax.scan(
        lambda c, _: (c + _call(f)(o, t, w, m), None), 0.0, None, length=2)[0]),
    "checkpoint": lambda f: jax.jit(jax.grad(jax.checkpoint(_call(f)))),
    "sharded": lambda f: jax.jit(_call(f)),
}
_ARGUMENTS = {
    "vmap": lambda *args: [_stack(a) for a in args],
    "sharded": lambda *args: [jax.tree.map(_sharded, a) for a in args],
}
CONTEXTS = list(_BUILD)


@functools.cache
def _program(context: str, loss: mlnll.Loss, checked: bool):
    return _BUILD[context](mlnll.checked(loss) if checked else loss)


def run(context: str, loss: mlnll.Loss, outputs, targets, weights=None, where=None, *, checked: bool = True):
    args = _ARGUMENTS.get(context, lambda *a: list(a))(outputs, targets, weights, where)
    return jax.block_until_ready(_program(context, loss, checked)(*args))


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("loss, outputs, targets, weights, where, message", [c[1:] for c in BAD_VALUES],
                         ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_stops_the_computation_naming_it(loss, outputs, targets, weights, where, message, context):
    expected = mlnll.CheckError if context == "eager" else (mlnll.CheckError, jax.errors.JaxRuntimeError)
    with pytest.raises(expected, match=re.escape(message)):
        run(context, loss, outputs, targets, weights, where)


C_BIG = 32000
_UNIFORM = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (2, C_BIG)), np.float32)
# Soft targets that sum to 1 only within float32 rounding: a softmax, and rows normalised by a
# sequential float32 sum (about 5e-6 off 1).
# sequential float32 sum (about 5e-6 off 1); class 7 of row 1 has a -inf logit and a target of 0.
LOGITS_BIG = jnp.zeros((4, C_BIG), F32).at[1, 7].set(-jnp.inf)
SOFT_BIG = jnp.concatenate([
    jax.nn.softmax(3 * jax.random.normal(jax.random.PRNGKey(2), (2, C_BIG), F32) + LOGITS_BIG[:2], axis=-1),
    jnp.asarray(_UNIFORM / np.cumsum(_UNIFORM, axis=-1, dtype=np.float32)[:, -1:]),
])
ROWS = jnp.array([True, False, True, True])

GOOD = {
    "ignore_index": (mlnll.nll(mlnll.Categorical(), ignore_index=-100), Z.at[0, 1].set(-jnp.inf).at[1].set(-jnp.inf),
                     jnp.array([0, -100, 2, 4]), None, None),
    "soft": (mlnll.nll(mlnll.Categorical()), Z, PROBS, jnp.array([1.0, 0.0, 2.0, 1.0], F32), None),
    "soft, 32000 classes, sums 1 within rounding": (mlnll.nll(mlnll.Categorical()), LOGITS_BIG, SOFT_BIG, None, None),
    "bernoulli": (mlnll.nll(mlnll.Bernoulli()), VEC.at[2].set(-jnp.inf), jnp.array([0.0, 1.0, 0.0, 0.5], F32), None, None),
    "normal": (mlnll.nll(mlnll.Normal()), (VEC, VEC), VEC, None, None),
    # Dropped examples (where False, a zero weight) may hold anything: the loss ignores them.
    "garbage in rows with weight 0": (mlnll.nll(mlnll.Categorical()), Z.at[0].set(-jnp.inf).at[3, 2].set(jnp.nan),
                                      jnp.array([0, 1, 2, 9]), jnp.array([0.0, 1.0, 2.0, 0.0], F32), None),
    "garbage in masked rows": (mlnll.nll(mlnll.Categorical()), Z.at[1].set(-jnp.inf), PROBS.at[1].set(jnp.nan), None, ROWS),
    "NaN target in a masked row": (mlnll.nll(mlnll.Normal()), (VEC, VEC), VEC.at[1].set(jnp.nan),
                                   jnp.array([1.0, jnp.nan, 0.5, 1.0], F32), ROWS),
}


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("loss, outputs, targets, weights, where", list(GOOD.values()), ids=list(GOOD))
def test_good_values_pass_through_with_the_losss_own_result(loss, outputs, targets, weights, where, context):
    got = run(context, loss, outputs, targets, weights, where)
    want = run(context, loss, outputs, targets, weights, where, checked=False)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


_TWO = (VEC, VEC)
NAN_TARGET = {  # family: (outputs, valid targets); a NaN goes at the last flat index
    mlnll.Normal(): (_TWO, VEC), mlnll.Laplace(): (_TWO, VEC), mlnll.Cauchy(): (_TWO, VEC),
    mlnll.Logistic(): (_TWO, VEC), mlnll.StudentT(): ((VEC, VEC, VEC), VEC), mlnll.VonMises(): (_TWO, VEC),
    mlnll.MultivariateNormal(): ((jnp.zeros((2, 3), F32), jnp.zeros((2, 3, 3), F32)), jnp.zeros((2, 3), F32)),
    mlnll.Bernoulli(): (VEC, jnp.zeros(4, F32)), mlnll.Poisson(): (VEC, jnp.ones(4, F32)),
    mlnll.Gamma(): (_TWO, jnp.ones(4, F32)),
}


@pytest.mark.parametrize("family", list(NAN_TARGET), ids=lambda f: type(f).__name__)
def test_a_nan_target_is_an_error_for_every_family(family):
    """The generic check, eagerly (its wiring is the same in every context, tested above)."""
    outputs, targets = NAN_TARGET[family]
    last = targets.size - 1
    bad = targets.reshape(-1).at[last].set(jnp.nan).reshape(targets.shape)
    safe = mlnll.checked(mlnll.nll(family))
    safe(outputs, targets)
    # Families whose support check sees the NaN (its log-likelihood is NaN or -inf) report it there;
    # the others (vector targets) through the generic check.
    message = rf"targets: (NaN|outside the support) at flat index {last}: got nan"
    with pytest.raises(mlnll.CheckError, match=message):
        safe(outputs, bad)


def test_the_soft_target_tolerance_follows_the_dtype_and_the_number_of_classes():
    """Sum 1 within ``4 eps + C eps_acc``: float32 with 32000 classes 3.8e-3, with 5 classes 1.1e-6."""
    safe = mlnll.checked(mlnll.nll(mlnll.Categorical()))
    off = PROBS.at[0, 0].add(1e-5)  # 5 classes: 1e-5 is beyond rounding
    with pytest.raises(mlnll.CheckError, match=re.escape("targets: soft targets do not sum to 1 at flat index 0")):
        safe(Z, off)
    big = SOFT_BIG.at[2, 0].add(0.01)  # 32000 classes: 1.01 was let through before
    with pytest.raises(mlnll.CheckError, match=re.escape("targets: soft targets do not sum to 1 at flat index 2")):
        safe(jnp.zeros((4, C_BIG), F32), big)
    # bfloat16 targets are judged at bfloat16 rounding, float64 ones at the logits' float32.
    safe(Z, jnp.full((4, 5), 0.2, jnp.bfloat16))
    safe(jnp.zeros((4, C_BIG), F32), SOFT_BIG.astype(jnp.bfloat16))
    with x64_scope():
        safe(Z, PROBS.astype(jnp.float64) + 1e-8)


def test_label_smoothing_puts_mass_on_every_class():
    """With label_smoothing a -inf logit anywhere in a kept row makes the loss infinite."""
    safe = mlnll.checked(mlnll.nll(mlnll.Categorical(), label_smoothing=0.1, ignore_index=-1))
    message = "targets: probability 0 (a logit is -inf and label_smoothing puts mass on every class) at flat index 1: got 1"
    with pytest.raises(mlnll.CheckError, match=re.escape(message)):
        safe(Z.at[1, 0].set(-jnp.inf), LABELS)
    safe(Z.at[1, 0].set(-jnp.inf), LABELS.at[1].set(-1))  # an ignored example is exempt
    weighted = mlnll.checked(mlnll.nll(mlnll.Categorical(), label_smoothing=0.1, class_weights=(0.0, 1, 1, 1, 1)))
    weighted(Z.at[:, 0].set(-jnp.inf), LABELS.at[0].set(1))  # no mass on a class of weight 0


def test_checked_needs_a_loss_and_the_unchecked_loss_is_unchanged():
    with pytest.raises(TypeError, match=re.escape("checked needs a loss made by mlnll.nll(...); got function.")):
        mlnll.checked(lambda o, t: 0.0)
    loss = mlnll.nll(mlnll.Categorical())
    safe = mlnll.checked(loss)
    assert safe.loss is loss
    # The unchecked loss compiles to a program without a host callback.
    assert "callback" not in jax.jit(loss).lower(Z, LABELS).as_text()
    assert "callback" in jax.jit(safe).lower(Z, LABELS).as_text()
