"""``python -m mlnll check``: every family's closed forms against autodiff on this backend."""

from __future__ import annotations

import argparse
import sys
import time


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1e}"


def check(seed: int = 0, batch: int = 64) -> int:
    """Run the check table in float32 and float64; print one row per family and dtype."""
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 inputs stay float32
    import jax.numpy as jnp

    from mlnll._src.cases import CASES
    from mlnll._src.check import GradCheck, check_grad

    start = time.perf_counter()
    header = f"{'family':<22} {'dtype':<8} {'backend':<7} {'grad abs':>9} {'grad rel':>9} {'fd rel':>9} {'fisher abs':>10} {'fisher rel':>10}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    for i, case in enumerate(CASES):
        for dtype in (jnp.float32, jnp.float64):
            key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
            results: list[GradCheck] = [
                check_grad(case.family, *case.random(key, dtype, batch)),
                check_grad(case.family, *case.extreme(dtype), finite_differences=False),
            ]
            worst = lambda field: max((getattr(r, field) for r in results if getattr(r, field) is not None), default=None)  # noqa: E731
            passed = all(r.passed for r in results)
            failures += not passed
            print(
                f"{case.name:<22} {jnp.dtype(dtype).name:<8} {jax.default_backend():<7} "
                f"{_fmt(worst('grad_abs_err')):>9} {_fmt(worst('grad_rel_err')):>9} {_fmt(worst('fd_rel_err')):>9} "
                f"{_fmt(worst('fisher_abs_err')):>10} {_fmt(worst('fisher_rel_err')):>10}  {'pass' if passed else 'FAIL'}"
            )
    elapsed = time.perf_counter() - start
    print(f"\n{len(CASES) * 2 - failures} passed, {failures} failed in {elapsed:.1f} s "
          "(random and extreme inputs; fd = 4th-order finite differences, float64 only)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlnll", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("check", help="closed-form gradients and Fisher vs autodiff, every family")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(seed=args.seed, batch=args.batch)
    return 2


if __name__ == "__main__":
    sys.exit(main())
