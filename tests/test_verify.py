"""The verification tools: ``check_grad``, the check command, and a user's own family in both."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlnll
from mlnll._src.families.bernoulli import Bernoulli
from mlnll._src.verify import command, registry
from mlnll._src.verify.case import Case, ScipyReference

CASES = registry.builtin_cases()


# -- every row of the check table, in this process (the command itself runs a subset below) ---------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_check_row_passes(case, dtype):
    result = command.check_row(case, dtype, index=CASES.index(case))
    assert result.passed, result
    if dtype == "float64":
        assert result.fd_rel_err is not None


# -- the command line ----------------------------------------------------------------------------------


def test_check_command_runs_a_subset_and_explains_its_columns(capsys):
    code = command.main(["check", "--family", "Bernoulli", "--family", "Normal(scale=2.0)", "--dtype", "float64",
                         "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.endswith(("pass", "FAIL"))]
    # --family takes a class name (every row of that family) or a row name.
    assert [line.split()[0] for line in rows] == ["Bernoulli", "Bernoulli", "Normal(scale=2.0)"]
    assert all(" float64 " in line and line.endswith("pass") for line in rows)
    assert out.splitlines()[0].startswith("checking 3 cases x 1 dtypes")
    for column in ("grad rel", "fd rel", "fisher rel", "tol"):
        assert f"  {column} " in out.split("columns")[1], column


def test_check_command_lists_every_row_and_rejects_an_unknown_name(capsys):
    assert command.main(["check", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert len(listed) == len(CASES)
    with pytest.raises(SystemExit, match="unknown family"):
        command.main(["check", "--family", "NoSuchFamily"])


def test_check_command_fails_on_a_wrong_closed_form(capsys):
    case = Case("off by 1%", _WrongGradient(), CASES[0].random, CASES[0].extreme)
    assert command.run_check([case], dtypes=["float64"], workers=1) == 1
    assert capsys.readouterr().out.count("FAIL") == 1


# -- check_grad -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _WrongGradient:
    """A family whose closed-form gradient is off by 1%: check_grad must catch it."""

    inner: Bernoulli = Bernoulli()

    def log_prob(self, outputs, targets):
        return self.inner.log_prob(outputs, targets)

    def grad(self, outputs, targets):
        return 1.01 * self.inner.grad(outputs, targets)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_check_grad_reports_errors_and_catches_a_wrong_closed_form():
    z = jnp.linspace(-3.0, 3.0, 7, dtype=jnp.float64)
    y = jnp.array([0, 1, 1, 0, 1, 0, 1], jnp.float64)
    good = mlnll.check_grad(mlnll.Bernoulli(), z, y)
    assert good.passed and good.grad_rel_err < 1e-13 and good.fd_rel_err < 1e-8
    assert good.fisher_rel_err < 1e-13 and good.dtype == "float64"
    bad = mlnll.check_grad(_WrongGradient(), z, y)
    assert not bad.passed
    assert bad.grad_rel_err == pytest.approx(0.01 / 1.01, rel=1e-6)
    assert bad.fd_rel_err > 1e-3


def test_check_grad_runs_finite_differences_in_float64_without_x64():
    """With x64 off (a user's default), a float32 check still gets an independent number: the
    closed form against finite differences, both in float64 inside check_grad's own x64 scope."""
    with jax.enable_x64(False):
        loc = jnp.array([0.3, -1.0, 2.0], jnp.float32)
        log_scale = jnp.array([0.1, -0.5, 0.7], jnp.float32)
        y = jnp.array([1.0, -2.0, 0.5], jnp.float32)
        result = mlnll.check_grad(mlnll.Normal(), (loc, log_scale), y)
        assert result.dtype == "float32" and result.passed
        # The closed form and jax.grad share Normal's custom_jvp: their gap is 0, the fd one is not.
        assert result.grad_rel_err == 0.0
        assert result.fd_rel_err is not None and 0.0 < result.fd_rel_err < 1e-9
        wrong = mlnll.check_grad(_WrongGradient(), jnp.array([0.5, -2.0], jnp.float32), jnp.array([1.0, 0.0], jnp.float32))
        assert wrong.fd_rel_err > 1e-3 and not wrong.passed


# -- a user's own family: 30 lines, and every tool accepts it --------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rayleigh:
    """Rayleigh(scale = exp(log_scale)): ``log p(y) = log y - 2 log_scale - y^2 / (2 s^2)``, y >= 0.
    Gradient: ``d(-log p)/d log_scale = 2 - y^2 / s^2``; Fisher ``E[(2 - y^2/s^2)^2] = 4``."""

    def log_prob(self, log_scale, y):
        ratio = jnp.square(y * jnp.exp(-log_scale))
        return jnp.where(y >= 0, jnp.log(y) - 2 * log_scale - ratio / 2, -jnp.inf)

    def grad(self, log_scale, y):
        return 2 - jnp.square(y * jnp.exp(-log_scale))

    def params(self, log_scale):
        return {"scale": jnp.exp(log_scale)}

    def mean(self, log_scale):
        return jnp.exp(log_scale) * math.sqrt(math.pi / 2)

    def sample(self, key, log_scale, *, sample_shape=()):
        u = jax.random.uniform(key, tuple(sample_shape) + jnp.shape(log_scale), jnp.asarray(log_scale).dtype)
        return jnp.exp(log_scale) * jnp.sqrt(-2 * jnp.log1p(-u))

    def entropy(self, log_scale):
        return 1 + log_scale - 0.5 * math.log(2) + 0.5 * np.euler_gamma

    def kl(self, p, q):
        raise NotImplementedError("not needed here")

    def fisher(self, log_scale):
        return jnp.full(jnp.shape(log_scale), 4.0, jnp.asarray(log_scale).dtype)

    def loss_options(self, *, tail_weight=1.0):
        return RayleighOptions(self, float(tail_weight))

    @classmethod
    def check_cases(cls):
        draw = lambda key, dtype, n: (jnp.zeros(n, dtype), cls().sample(key, jnp.zeros(n, dtype)))  # noqa: E731
        return (Case("Rayleigh", cls(), draw, lambda dtype: (jnp.array([-30.0, 30.0], dtype), jnp.array([1e-12, 1e12], dtype)),
                     scipy=ScipyReference(lambda log_scale: __import__("scipy.stats").stats.rayleigh(scale=np.exp(log_scale)))),)


@dataclasses.dataclass(frozen=True)
class RayleighOptions:
    """``nll(Rayleigh(), tail_weight=w)``: ``-log y + 2 log_scale + w y^2 / (2 s^2)``; grad ``2 - w y^2/s^2``."""

    family: Rayleigh
    tail_weight: float

    def per_example(self, log_scale, y):
        from mlnll._src.family import PerExample

        ratio = jnp.square(y * jnp.exp(-log_scale))
        return PerExample(-jnp.log(y) + 2 * log_scale + self.tail_weight * ratio / 2)

    def per_example_grad(self, log_scale, y):
        return 2 - self.tail_weight * jnp.square(y * jnp.exp(-log_scale))


def test_a_user_family_works_with_nll_checked_check_grad_and_the_check_command(capsys):
    family = Rayleigh()
    log_scale = jnp.array([0.0, 0.5, -1.0], jnp.float64)
    y = jnp.array([1.0, 2.0, 0.3], jnp.float64)
    import scipy.stats

    want = -np.mean(scipy.stats.rayleigh.logpdf(np.asarray(y), scale=np.exp(np.asarray(log_scale))))
    np.testing.assert_allclose(mlnll.nll(family)(log_scale, y), want, rtol=1e-14)
    weighted = mlnll.nll(family, tail_weight=2.0)
    np.testing.assert_allclose(jax.grad(weighted)(log_scale, y), weighted.grad(log_scale, y), rtol=1e-14)
    assert mlnll.check_grad(family, log_scale, y).passed
    safe = mlnll.checked(mlnll.nll(family))
    np.testing.assert_allclose(safe(log_scale, y), want, rtol=1e-14)
    with pytest.raises(Exception, match="targets: outside the support at flat index 1: got -2.0"):
        safe(log_scale, jnp.array([1.0, -2.0, 0.3]))
    with pytest.raises(Exception, match=r"outputs \(leaf 0\): non-finite at flat index 2: got nan"):
        safe(jnp.array([0.0, 0.5, jnp.nan]), y)
    # The check command imports the module that defines it and finds it by its check_cases.
    assert command.main(["check", "--import", __name__, "--family", "Rayleigh", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("Rayleigh ") == 2 and "2 passed, 0 failed" in out
