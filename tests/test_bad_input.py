"""Never silently wrong: a table of bad inputs with their exact errors (checked mode: test_checked.py)."""

import re

import jax
import jax.numpy as jnp
import pytest

import mlnll

F32 = jnp.float32
Z = jnp.zeros((4, 5), F32)
LABELS = jnp.array([0, 1, 2, 3])
VEC = jnp.zeros((4,), F32)

# (description, thunk, exception type, the message it must contain)
BAD_INPUTS = [
    ("integer logits, Categorical", lambda: mlnll.nll(mlnll.Categorical())(jnp.zeros((4, 5), jnp.int32), LABELS),
     TypeError, "Categorical outputs (logits) must be a floating array (raw network outputs); got dtype int32"),
    ("integer logits, Bernoulli", lambda: mlnll.nll(mlnll.Bernoulli())(jnp.zeros((4,), jnp.int32), VEC),
     TypeError, "Bernoulli outputs (logits) must be a floating array (raw network outputs); got dtype int32"),
    ("integer loc, Normal", lambda: mlnll.nll(mlnll.Normal())((jnp.zeros((4,), jnp.int32), VEC), VEC),
     TypeError, "Normal outputs[0] (loc) must be a floating array (raw network outputs); got dtype int32"),
    ("Normal given one array", lambda: mlnll.nll(mlnll.Normal())(VEC, VEC),
     TypeError, "Normal outputs must be a tuple (loc, log_scale); got a single ArrayImpl"),
    ("Normal given three arrays", lambda: mlnll.nll(mlnll.Normal())((VEC, VEC, VEC), VEC),
     TypeError, "Normal outputs must be a tuple (loc, log_scale); got a tuple of length 3"),
    ("fixed-scale Normal given a tuple", lambda: mlnll.nll(mlnll.Normal(scale=2.0))((VEC, VEC), VEC),
     TypeError, "Normal(scale=2.0) fixes log_scale and takes loc alone as outputs; got a tuple of length 2"),
    ("label batch does not fit", lambda: mlnll.nll(mlnll.Categorical())(Z, jnp.zeros((3,), jnp.int32)),
     ValueError, "Categorical: shapes do not broadcast: outputs[..., :-1] (batch) shape (4,), targets (labels) shape (3,)."),
    ("Bernoulli shapes do not fit", lambda: mlnll.nll(mlnll.Bernoulli())(VEC, jnp.zeros((3,), F32)),
     ValueError, "Bernoulli: shapes do not broadcast: outputs shape (4,), targets shape (3,)."),
    ("Normal targets do not fit", lambda: mlnll.nll(mlnll.Normal())((VEC, VEC), jnp.zeros((5,), F32)),
     ValueError, "Normal: shapes do not broadcast: outputs shape (4,), targets shape (5,)."),
    ("float labels with integer semantics", lambda: mlnll.nll(mlnll.Categorical())(Z, LABELS.astype(F32)),
     ValueError, "Categorical: floating targets are probability vectors [..., C] with C = 5 as in outputs shape (4, 5); got targets shape (4,)"),
    ("soft targets with the wrong C", lambda: mlnll.nll(mlnll.Categorical())(Z, jnp.full((4, 3), 1 / 3, F32)),
     ValueError, "with C = 5 as in outputs shape (4, 5); got targets shape (4, 3)"),
    ("logits without a class axis", lambda: mlnll.Categorical().log_prob(jnp.zeros((), F32), jnp.array(0)),
     ValueError, "Categorical outputs (logits) need a class axis, shape [..., C]; got shape ()."),
    ("complex targets", lambda: mlnll.nll(mlnll.Bernoulli())(VEC, jnp.zeros((4,), jnp.complex64)),
     TypeError, "Bernoulli targets must be real; got dtype complex64."),
    ("unknown reduction", lambda: mlnll.nll(mlnll.Categorical(), reduction="avg"),
     ValueError, "reduction must be one of 'mean', 'sum', 'none'; got 'avg'."),
    ("label_smoothing above 1", lambda: mlnll.nll(mlnll.Categorical(), label_smoothing=1.5),
     ValueError, "label_smoothing must be a number in [0, 1]; got 1.5."),
    ("label_smoothing below 0", lambda: mlnll.nll(mlnll.Bernoulli(), label_smoothing=-0.1),
     ValueError, "label_smoothing must be a number in [0, 1]; got -0.1."),
    ("class_weights of the wrong length", lambda: mlnll.nll(mlnll.Categorical(), class_weights=[1.0, 2.0, 3.0])(Z, LABELS),
     ValueError, "class_weights has length 3; expected C = 5, the size of the outputs' class axis."),
    ("class_weights not 1-D", lambda: mlnll.nll(mlnll.Categorical(), class_weights=jnp.ones((5, 1))),
     ValueError, "class_weights must be a 1-D array of C weights; got shape (5, 1)."),
    ("negative class_weights", lambda: mlnll.nll(mlnll.Categorical(), class_weights=[1.0, -1.0]),
     ValueError, "class_weights must be finite and >= 0; got (1.0, -1.0)."),
    ("negative focal_gamma", lambda: mlnll.nll(mlnll.Categorical(), focal_gamma=-1.0),
     ValueError, "focal_gamma must be a finite number >= 0; got -1.0."),
    ("negative z_loss", lambda: mlnll.nll(mlnll.Categorical(), z_loss=-1e-4),
     ValueError, "z_loss must be a finite number >= 0; got -0.0001."),
    ("float ignore_index", lambda: mlnll.nll(mlnll.Categorical(), ignore_index=-100.0),
     TypeError, "ignore_index must be an int label value (e.g. -100); got -100.0."),
    ("an option the family does not have", lambda: mlnll.nll(mlnll.Normal(), label_smoothing=0.1),
     TypeError, "nll(Normal()) got unexpected option(s) ['label_smoothing']; it accepts: beta."),
    ("a Categorical option on Bernoulli", lambda: mlnll.nll(mlnll.Bernoulli(), ignore_index=-100),
     TypeError, "nll(Bernoulli()) got unexpected option(s) ['ignore_index']; it accepts: pos_weight, label_smoothing, focal_gamma."),
    ("pos_weight of the wrong length", lambda: mlnll.nll(mlnll.Bernoulli(), pos_weight=[1.0, 2.0])(Z, Z),
     ValueError, "pos_weight has length 2; it must match the last axis of the outputs (shape (4, 5))."),
    ("negative pos_weight", lambda: mlnll.nll(mlnll.Bernoulli(), pos_weight=-2.0),
     ValueError, "pos_weight must be finite and >= 0; got (-2.0,)."),
    ("integer mask", lambda: mlnll.nll(mlnll.Categorical())(Z, LABELS, where=jnp.ones((4,), jnp.int32)),
     TypeError, "where must be a boolean mask; got dtype int32."),
    ("mask of the wrong shape", lambda: mlnll.nll(mlnll.Categorical())(Z, LABELS, where=jnp.ones((5,), bool)),
     ValueError, "where shape (5,) does not broadcast to the per-example loss shape (4,)."),
    ("weights of the wrong shape", lambda: mlnll.nll(mlnll.Categorical())(Z, LABELS, weights=jnp.ones((4, 5), F32)),
     ValueError, "weights shape (4, 5) does not broadcast to the per-example loss shape (4,)"),
    ("complex weights", lambda: mlnll.nll(mlnll.Categorical())(Z, LABELS, weights=jnp.ones((4,), jnp.complex64)),
     TypeError, "weights must be a real array; got dtype complex64."),
    ("non-positive fixed scale", lambda: mlnll.Normal(scale=0.0),
     ValueError, "Normal(scale=...) must be a finite positive number; got 0.0."),
    ("entropy base 1", lambda: mlnll.entropy(jnp.array([0.5, 0.5], F32), base=1),
     ValueError, "base must be a positive number other than 1 (2 for bits), or None for nats; got 1."),
    ("not a family", lambda: mlnll.nll("categorical"),
     TypeError, "nll needs a family such as mlnll.Categorical(); got str."),
    ("checked on a plain function", lambda: mlnll.checked(lambda o, t: 0.0),
     TypeError, "checked needs a loss made by mlnll.nll(...); got function."),
    ("KL between outputs that do not fit", lambda: mlnll.Bernoulli().kl(VEC, jnp.zeros((3,), F32)),
     ValueError, "Bernoulli.kl: shapes do not broadcast: outputs_p shape (4,), outputs_q shape (3,)."),
    ("an empty class axis, Categorical", lambda: mlnll.nll(mlnll.Categorical())(jnp.zeros((4, 0)), LABELS),
     ValueError, "Categorical outputs (logits): an event axis of size 0 (shape (4, 0))"),
    ("an empty class axis, Multinomial", lambda: mlnll.Multinomial(total_count=2).log_prob(jnp.zeros((4, 0)), jnp.zeros((4, 0))),
     ValueError, "Multinomial outputs (logits): an event axis of size 0 (shape (4, 0))"),
    ("no components, MixtureSameFamily",
     lambda: mlnll.MixtureSameFamily(mlnll.Normal()).log_prob((jnp.zeros((4, 0)), (jnp.zeros((4, 0)), jnp.zeros((4, 0)))), VEC),
     ValueError, "MixtureSameFamily outputs (mixture_logits): an event axis of size 0 (shape (4, 0))"),
    ("a tuple for a one-output family", lambda: mlnll.Poisson().log_prob((VEC, VEC), VEC),
     TypeError, "Poisson takes log_rate alone as outputs; got a tuple of length 2."),
]


@pytest.mark.parametrize("thunk, error, message", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_a_clear_error(thunk, error, message):
    with pytest.raises(error, match=re.escape(message)):
        thunk()


def test_the_table_is_at_least_twenty_long():
    assert len(BAD_INPUTS) >= 20


def test_shape_errors_are_raised_at_trace_time_under_jit():
    loss = jax.jit(mlnll.nll(mlnll.Categorical()))
    with pytest.raises(ValueError, match=re.escape("targets (labels) shape (3,)")):
        loss(Z, jnp.zeros((3,), jnp.int32))
    with pytest.raises(TypeError, match="must be a floating array"):
        loss(jnp.zeros((4, 5), jnp.int32), LABELS)


def test_unchecked_loss_marks_out_of_support_examples_and_leaves_the_rest():
    loss = mlnll.nll(mlnll.Categorical(), reduction="none")
    values = loss(Z, jnp.array([0, 5, -3, 1]))
    assert float(values[0]) == pytest.approx(float(jnp.log(5.0)), rel=1e-6)
    assert float(values[1]) == float("inf") and float(values[2]) == float("inf")
    assert float(values[3]) == pytest.approx(float(jnp.log(5.0)), rel=1e-6)
