"""linear_categorical_kl: fused distillation against the materialised log-softmax formula in
float64 and against mpmath for nearly identical teacher/student pairs."""

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import mlnll
from helpers import fused_tolerances, rel, rel_l2
from mlnll._src.verify.tolerances import TOLERANCES
from mlnll._src.vocab import distill

# Several blocks of 96 columns and a ragged tail of 40; the teacher is wider than the student.
N, D_S, D_T, V, BLOCK = 64, 32, 48, 1000, 96
TEMPERATURE = 0.7

# Issue 16's bounds (values 1e-5 / 1e-4, gradients 1e-5 / 5e-3); see helpers.fused_tolerances.
RTOL, GRAD_RTOL = fused_tolerances()


def _models(seed, dtype):
    """Student and teacher ``(hidden, weight, bias)``, drawn in numpy (no device op to compile)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape, np.float32)  # noqa: E731
    student = (normal(N, D_S), normal(D_S, V) * np.float32(2 / math.sqrt(D_S)), normal(V) * np.float32(0.5))
    teacher = (normal(N, D_T), normal(D_T, V) * np.float32(3 / math.sqrt(D_T)), normal(V) * np.float32(0.5))
    cast = lambda model: tuple(jnp.asarray(x.astype(dtype)) for x in model)  # noqa: E731
    return cast(student), cast(teacher)


def materialized_kl(student, teacher, *, temperature=TEMPERATURE, direction="forward"):
    """Per row ``sum_c p_c (log p_c - log q_c)`` from the two materialised log-softmaxes, float64."""
    def log_softmax(hidden, weight, bias):
        logits = hidden.astype(jnp.float64) @ weight.astype(jnp.float64) + bias.astype(jnp.float64)[None, :]
        return jax.nn.log_softmax(logits / temperature)

    s, t = log_softmax(*student), log_softmax(*teacher)
    log_p, log_q = (t, s) if direction == "forward" else (s, t)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=1)


WHERE = np.arange(N) % 7 != 3
COT = np.linspace(0.5, 1.5, N)


def _rows_and_grads(rows_fn, argnums, *args):
    """One compiled program: the per-row values and the gradients of ``sum(COT * rows)``."""
    def objective(*a):
        rows = rows_fn(*a)
        return jnp.sum(jnp.asarray(COT) * rows.astype(jnp.float64)), rows

    (_, rows), grads = jax.jit(jax.value_and_grad(objective, argnums, has_aux=True))(*args)
    return rows, grads


@pytest.mark.parametrize(
    "direction,dtype",
    [("forward", "float32"), ("reverse", "float32"), ("forward", "bfloat16"), ("reverse", "float64")],
)
def test_kl_values_and_student_gradients_match_materialized(direction, dtype):
    dtype = np.dtype(dtype)
    student, teacher = _models(0, dtype)
    cfg = distill.KLConfig(V, BLOCK, TEMPERATURE, direction == "reverse")

    def ours(sh, sw, sb, th, tw, tb):
        return mlnll.linear_categorical_kl(sh, sw, th, tw, student_bias=sb, teacher_bias=tb, temperature=TEMPERATURE,
                                           direction=direction, where=WHERE, reduction="none", block_size=BLOCK)

    def ours_with_float32_rows(*a):
        # For bfloat16 inputs, also the float32 rows before they are rounded to bfloat16.
        return ours(*a), distill._per_example(*a, cfg)

    def oracle(sh, sw, sb, th, tw, tb):
        return jnp.where(WHERE, materialized_kl((sh, sw, sb), (th, tw, tb), direction=direction), 0.0)

    # Gradients in all six arguments: the teacher's must come back exactly 0.
    (_, (rows, f32_rows)), grads = jax.jit(jax.value_and_grad(
        lambda *a: (jnp.sum(jnp.asarray(COT) * ours(*a).astype(jnp.float64)), ours_with_float32_rows(*a)),
        tuple(range(6)), has_aux=True))(*student, *teacher)
    want_rows, want_grads = _rows_and_grads(oracle, (0, 1, 2), *student, *teacher)
    kept = WHERE
    assert rows.dtype == dtype and rows.shape == (N,)
    assert np.all(np.asarray(rows)[~kept] == 0)
    want_rows = np.asarray(want_rows)
    if dtype == jnp.bfloat16:
        assert f32_rows.dtype == jnp.float32
        assert np.max(rel(np.asarray(f32_rows)[kept], want_rows[kept])) <= RTOL[dtype]
        assert np.max(rel(np.asarray(rows)[kept], want_rows[kept])) <= 2.0**-8
    else:
        assert np.max(rel(np.asarray(rows)[kept], want_rows[kept])) <= RTOL[dtype]
    for g, w, x in zip(grads[:3], want_grads, student):
        assert g.dtype == x.dtype and g.shape == x.shape
        assert rel_l2(g, w) <= GRAD_RTOL[dtype]
    for g in grads[3:]:
        assert not np.any(np.asarray(g))
    assert not np.any(np.asarray(grads[0])[~kept])  # dropped rows: no gradient


def _np_kl(student, teacher, *, temperature=TEMPERATURE, direction="forward"):
    """``materialized_kl`` in numpy float64 (a value oracle with nothing to compile)."""
    def log_softmax(hidden, weight, bias):
        z = (np.asarray(hidden, np.float64) @ np.asarray(weight, np.float64) + np.asarray(bias, np.float64)) / temperature
        top = np.max(z, axis=1, keepdims=True)
        return z - top - np.log(np.sum(np.exp(z - top), axis=1, keepdims=True))

    s, t = log_softmax(*student), log_softmax(*teacher)
    log_p, log_q = (t, s) if direction == "forward" else (s, t)
    mass = log_p > -np.inf  # 0 log 0 = 0: a class of probability 0 under P adds nothing
    log_p, log_q = np.where(mass, log_p, 0.0), np.where(mass, log_q, 0.0)
    with np.errstate(invalid="ignore"):  # inf - inf where Q is 0 and P is not: the KL is then +inf
        terms = np.where(mass, np.exp(log_p) * (log_p - log_q), 0.0)
    return np.sum(terms, axis=1)


def test_reductions_and_batch_axes():
    student, teacher = _models(1, np.float32)
    want = _np_kl(student, teacher)
    batched = (student[0].reshape(8, 8, D_S), *student[1:]), (teacher[0].reshape(8, 8, D_T), *teacher[1:])

    def run(reduction, where):
        (sh, sw, sb), (th, tw, tb) = batched
        return mlnll.linear_categorical_kl(sh, sw, th, tw, student_bias=sb, teacher_bias=tb, temperature=TEMPERATURE,
                                           where=where, reduction=reduction, block_size=BLOCK)

    mean, total, rows, nothing = jax.jit(lambda: (
        run("mean", WHERE.reshape(8, 8)), run("sum", WHERE.reshape(8, 8)), run("none", None),
        run("mean", np.zeros((8, 8), bool))))()
    assert rows.shape == (8, 8)
    tol = RTOL[np.dtype("float32")]
    np.testing.assert_allclose(np.asarray(rows).reshape(-1), want, rtol=tol)
    np.testing.assert_allclose(float(mean), np.mean(want[WHERE]), rtol=tol)
    np.testing.assert_allclose(float(total), np.sum(want[WHERE]), rtol=tol)
    assert float(nothing) == 0.0


def _mp_kl(logits_p, logits_q, temperature):
    """mpmath (80 digits, set locally: the suite shares one mpmath context): per row
    KL(softmax(x / t) || softmax(y / t))."""
    with mpmath.workdps(80):
        out = []
        for x_row, y_row in zip(np.asarray(logits_p, np.float64), np.asarray(logits_q, np.float64)):
            x = [mpmath.mpf(float(v)) / temperature for v in x_row]
            y = [mpmath.mpf(float(v)) / temperature for v in y_row]
            lx = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in x))
            ly = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in y))
            out.append(float(mpmath.fsum(mpmath.exp(a - lx) * ((a - lx) - (b - ly)) for a, b in zip(x, y))))
        return np.array(out)


@pytest.mark.parametrize("temperature", [2.0, 0.7])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_nearly_identical_models_keep_relative_accuracy(direction, temperature):
    # Exact float32 logits (one-hot hidden rows pick rows of weight; mpmath divides them by t
    # exactly). The student is the teacher perturbed by ~1e-4 per logit: a KL of ~1e-9 and, on
    # confident rows, ~1e-15 to ~1e-24, where sum p (log p - log q) in float32 is noise (or 0). At
    # t = 0.7 the logits are never divided: (y - x) / t keeps the 1e-4 differences to an ulp of
    # themselves (y / t - x / t would keep two digits of a KL of 1e-9).
    v = 200
    rng = np.random.default_rng(7)
    teacher = (rng.standard_normal((4, v)) * 3).astype(np.float32)
    teacher[1, 5] += 50.0 * temperature / 2
    teacher[3, 7] += 90.0 * temperature / 2
    student = (teacher + rng.standard_normal((4, v)).astype(np.float32) * np.float32(1e-4)).astype(np.float32)
    eye = np.eye(4, dtype=np.float32)
    got = jax.jit(lambda s, t: mlnll.linear_categorical_kl(eye, s, eye, t, temperature=temperature,
                                                           direction=direction, reduction="none",
                                                           block_size=48))(student, teacher)
    want = _mp_kl(teacher, student, temperature) if direction == "forward" else _mp_kl(student, teacher, temperature)
    assert 1e-10 < want[0] < 1e-8 and want[1] < 1e-14 and want[3] < 1e-20
    # 2e-6: the float32 "value" tolerance (17 ulps of the one table).
    assert np.max(rel(got, want)) <= TOLERANCES[np.dtype("float32")].value


def test_masked_classes_jumps_and_infinite_rows():
    # Logits with -inf from the biases (one-hot hidden rows keep the matmul exact and free of 0 * inf):
    # the teacher gives probability 0 to the first 100 classes (P = teacher has no mass in the first
    # blocks), both models mask 150..159, and row 1's teacher logits fall by 120 and then jump by 60,
    # so the running shift moves far from where it started.
    v, rows = 300, 3
    rng = np.random.default_rng(8)
    t_logits = (rng.standard_normal((rows, v)) * 3).astype(np.float32)
    s_logits = (rng.standard_normal((rows, v)) * 3).astype(np.float32)
    t_logits[1, 100:240] -= 120.0
    t_logits[1, 250] += 60.0
    t_bias = np.zeros(v, np.float32)
    t_bias[:100] = -np.inf
    t_bias[150:160] = -np.inf
    s_bias = np.zeros(v, np.float32)
    s_bias[150:160] = -np.inf
    s_bias_gap = s_bias.copy()
    s_bias_gap[200] = -np.inf  # the student gives 0 to class 200, which the teacher does not
    eye = np.eye(rows, dtype=np.float32)

    def kl(sw, sb, direction, where=None, reduction="none"):
        return mlnll.linear_categorical_kl(eye, sw, eye, t_logits, student_bias=sb, teacher_bias=t_bias,
                                           direction=direction, where=where, reduction=reduction, block_size=40)

    def program(sw, sb, sb_gap):
        # A kept row whose KL is +inf gives +inf and no NaN gradient; dropped, it gives exactly 0.
        grad = jax.grad(lambda w, b: kl(w, b, "forward", np.array([True, False, False]), "sum"), (0, 1))
        dropped = jax.value_and_grad(lambda w, b: kl(w, b, "forward", np.zeros(rows, bool), "mean"), (0, 1))
        return kl(sw, sb, "forward"), kl(sw, sb, "reverse"), kl(sw, sb_gap, "forward"), grad(sw, sb_gap), \
            dropped(sw, sb_gap)

    forward, reverse, gap, grads, (value, dropped_grads) = jax.jit(program)(s_logits, s_bias, s_bias_gap)
    want = _np_kl((eye, s_logits, s_bias), (eye, t_logits, t_bias), temperature=1.0)
    np.testing.assert_allclose(forward, want, rtol=RTOL[np.dtype("float32")])
    # Reverse: the student has mass where the teacher has none, so KL(student || teacher) = +inf.
    assert np.all(np.isposinf(reverse)) and np.all(np.isposinf(gap))
    assert not any(np.any(np.asarray(g)) for g in grads)  # an infinite KL has no finite gradient: 0
    assert float(value) == 0.0 and not any(np.any(np.asarray(g)) for g in dropped_grads)


def test_a_model_against_itself_is_exactly_zero():
    (sh, sw, sb), _ = _models(2, np.float32)

    def both(h, w, b):
        return [jax.value_and_grad(lambda h, w, b, d=d: mlnll.linear_categorical_kl(
            h, w, h, w, student_bias=b, teacher_bias=b, direction=d, block_size=BLOCK), (0, 1, 2))(h, w, b)
            for d in ("forward", "reverse")]

    for value, grads in jax.jit(both)(sh, sw, sb):
        assert float(value) == 0.0
        assert not any(np.any(np.asarray(g)) for g in grads)


def test_temporary_memory_is_a_small_fraction_of_the_materialized_path():
    n, d, v = 1024, 64, 32768
    shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32))

    def temp_bytes(loss):
        compiled = jax.jit(jax.value_and_grad(loss, (0, 1))).lower(*shapes, *shapes).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    ours = temp_bytes(lambda sh, sw, th, tw: mlnll.linear_categorical_kl(sh, sw, th, tw))
    def materialized(sh, sw, th, tw):
        log_q, log_p = jax.nn.log_softmax(sh @ sw), jax.nn.log_softmax(jax.lax.stop_gradient(th @ tw))
        return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))

    reference = temp_bytes(materialized)
    assert ours <= 0.10 * reference


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"direction": "both"}, ValueError, "direction must be one of 'forward', 'reverse'"),
        ({"temperature": 0}, ValueError, "temperature must be a finite Python number > 0"),
        ({"reduction": "batchmean"}, ValueError, "reduction must be one of"),
        ({"teacher_weight": np.ones((D_T, V + 1), np.float32)}, ValueError, "teacher_weight must have V = 1000 classes"),
        ({"teacher_hidden": np.ones((N + 1, D_T), np.float32)}, ValueError, r"teacher_hidden must have the batch shape \(64,\)"),
        ({"student_weight": np.ones((D_S + 1, V), np.float32)}, ValueError, r"student_weight must have shape \[D, V\] with D = 32"),
        ({"teacher_bias": np.ones(V - 1, np.float32)}, ValueError, r"teacher_bias must have shape \(1000,\)"),
        ({"student_hidden": np.ones((N, D_S), np.int32)}, TypeError, "student_hidden must be a floating array"),
        ({"where": np.ones(N, np.float32)}, TypeError, "where must be a boolean mask"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(kwargs, error, match):
    ones = lambda *shape: np.ones(shape, np.float32)  # noqa: E731
    args = {"student_hidden": ones(N, D_S), "student_weight": ones(D_S, V), "teacher_hidden": ones(N, D_T),
            "teacher_weight": ones(D_T, V)}
    args.update(kwargs)
    positional = [args.pop(k) for k in ("student_hidden", "student_weight", "teacher_hidden", "teacher_weight")]
    with pytest.raises(error, match=match):
        mlnll.linear_categorical_kl(*positional, **args)
