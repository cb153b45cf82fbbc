"""Experiment (issue 11): how the log-scale gradient near |r| = 1 is best written in float32.

    python benchmarks/log_scale_gradient.py [--n 200000]

``d(-log p)/d log_scale`` is ``1 - r^2`` (Normal, LogNormal in log y) or ``(1 - r^2) / (1 + r^2)``
(Cauchy), with ``r = (y - loc) exp(-log_scale)``: it crosses 0 at |r| = 1, where the rounding of
r itself (the exp, the product) is amplified by ``2 r^2 / |1 - r^2|``. A single grid point of the
accuracy table cannot tell two algebraically equal forms apart there (each wins at some points),
so this draws float32 inputs with |r| within 5% of 1 and compares the error distribution of each
form, and of mlnll's ``jax.grad``, against float64 evaluated on the same float32 inputs.
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mlnll  # noqa: E402

CAUCHY_FORMS = {
    "1 - 2 r^2 / (1 + r^2)  (autodiff of log1p(r^2))": lambda r: 1 - 2 * r * r / (1 + r * r),
    "(1 - r^2) / (1 + r^2)": lambda r: (1 - r * r) / (1 + r * r),
    "(1 - abs(r))(1 + abs(r)) / (1 + r^2)": lambda r: (1 - jnp.abs(r)) * (1 + jnp.abs(r)) / (1 + r * r),
}
NORMAL_FORMS = {"1 - r^2": lambda r: 1 - r * r, "(1 - r)(1 + r)": lambda r: (1 - r) * (1 + r)}


def inputs(n: int, seed: int = 1):
    """float32 ``(loc, log_scale, y)`` with ``|r|`` uniform within 5% of 1."""
    rng = np.random.default_rng(seed)
    log_scale = rng.uniform(-3, 3, n).astype(np.float32)
    loc = rng.uniform(-5, 5, n).astype(np.float32)
    r = rng.choice([-1.0, 1.0], n) * rng.uniform(0.95, 1.05, n)
    y = (loc + r * np.exp(log_scale.astype(np.float64))).astype(np.float32)
    return loc, log_scale, y


def summary(got, exact) -> str:
    rel = np.abs(np.asarray(got, np.float64) - exact) / np.abs(exact)
    return f"| {np.median(rel):.2e} | {np.quantile(rel, 0.9):.2e} | {np.quantile(rel, 0.99):.2e} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args(argv)
    loc, log_scale, y = inputs(args.n)
    r64 = (y.astype(np.float64) - loc) * np.exp(-log_scale.astype(np.float64))
    r32 = jnp.asarray(y - loc, jnp.float32) * jnp.exp(-jnp.asarray(log_scale))  # as mlnll forms r
    print("| family | form | median rel. error | 90% | 99% |\n|---|---|---|---|---|")
    cauchy, normal = (lambda r: (1 - r * r) / (1 + r * r)), (lambda r: 1 - r * r)
    for name, family, forms, exact_form in (("Cauchy", mlnll.Cauchy(), CAUCHY_FORMS, cauchy),
                                             ("Normal", mlnll.Normal(), NORMAL_FORMS, normal)):
        exact = exact_form(r64)
        # The floor: the exact form of r as float32 computes it (no form can undo r's rounding).
        print(f"| {name} | exact form of the float32 r (the floor) | "
              + summary(exact_form(np.asarray(r32, np.float64)), exact)[2:])
        grad = jax.jit(jax.grad(mlnll.nll(family, reduction="sum")))
        shipped = grad((jnp.asarray(loc), jnp.asarray(log_scale)), jnp.asarray(y))[1]
        print(f"| {name} | mlnll `jax.grad` | " + summary(shipped, exact)[2:])
        for label, form in forms.items():
            print(f"| {name} | `{label}` | " + summary(jax.jit(form)(r32), exact)[2:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
