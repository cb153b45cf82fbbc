"""Experiment (issue 11, item 4): a row-blocked Categorical kernel against the shipped one.

    python benchmarks/row_blocked.py [--rows 4096] [--classes 32000] [--rounds 15]

The shipped kernel reads the logits three times (max, sum of exps, gradient) and writes the
gradient once. A row-blocked kernel walks blocks of B rows with ``lax.map``: each block's max,
sum and gradient are computed while the block is in cache, so the logits are read from memory
once. Under ``custom_jvp`` the block gradient is a residual that the backward pass multiplies by
the cotangent (one more read and write), so the question is whether the saved reads pay for it.
Prints value + grad time of both against optax and the read + write floor ``z * 2.0``.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import optax

import mlnll

try:
    from bench import interleaved, ms
except ImportError:
    from benchmarks.bench import interleaved, ms


def _block_value_and_grad(z, y):
    """``(-log softmax(z)_y, softmax(z) - onehot(y))`` for one block of rows."""
    top = jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z - top)
    total = jnp.sum(e, axis=-1, keepdims=True)
    z_y = jnp.take_along_axis(z, y[:, None], axis=-1)
    value = (top + jnp.log(total) - z_y)[:, 0]
    classes = jnp.arange(z.shape[-1])[None]
    grad = e / total - (classes == y[:, None]).astype(z.dtype)
    return value, grad


def blocked_cross_entropy(block_rows: int):
    @jax.custom_jvp
    def f(z, y):
        return _blocked(z, y)[0]

    def _blocked(z, y):
        n, c = z.shape
        zb, yb = z.reshape(n // block_rows, block_rows, c), y.reshape(n // block_rows, block_rows)
        value, grad = jax.lax.map(lambda a: _block_value_and_grad(*a), (zb, yb))
        return value.reshape(n), grad.reshape(n, c)

    @f.defjvp
    def _jvp(primals, tangents):
        z, y = primals
        dz, _ = tangents
        value, grad = _blocked(z, y)
        return value, jnp.sum(grad * dz, axis=-1)

    return f


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--classes", type=int, default=32000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--blocks", type=int, nargs="*", default=[8, 32, 128])
    args = parser.parse_args(argv)
    kz, ky = jax.random.split(jax.random.PRNGKey(0))
    z = 3 * jax.random.normal(kz, (args.rows, args.classes))
    y = jax.random.randint(ky, (args.rows,), 0, args.classes)
    loss = mlnll.nll(mlnll.Categorical())
    fns = {
        "mlnll": jax.value_and_grad(lambda z, y: loss(z, y)),
        "optax": jax.value_and_grad(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()),
        "floor": lambda z, y: z * 2.0,
    }
    for b in args.blocks:
        fns[f"blocked B={b}"] = jax.value_and_grad(
            lambda z, y, f=blocked_cross_entropy(b): jnp.mean(f(z, y)))
    s = interleaved(fns, (z, y), args.rounds)
    floor = s["floor"]["median"]
    print(f"| implementation (logits [{args.rows}, {args.classes}] float32) | ms | / floor | / optax | spread |")
    print("|---|---|---|---|---|")
    for name, e in s.items():
        print(f"| {name} | {ms(e['median'])} | **{e['median'] / floor:.2f}** "
              f"| {e['median'] / s['optax']['median']:.2f} | {e['spread']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
