"""``python -m mlnll check``: every family's closed forms against autodiff on this backend.

Each row of the check table (``registry``) runs as one jit-compiled program per dtype: the
random inputs are drawn inside it and joined with the fixed extreme ones into one batch, and the
program returns everything ``check_grad`` compares (``check_grad.evaluate``). The programs are
compiled on a pool of threads (XLA compiles outside the GIL), then run in table order.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mlnll._src.verify import check_grad as cg
from mlnll._src.verify import registry, tolerances
from mlnll._src.verify.case import Case

DTYPES = ("float32", "float64")

FOOTER = """\
columns (each the largest over the row's random and extreme inputs):
  grad rel    closed-form grad vs jax.grad of -log_prob, |a - b| / max(|a|, |b|, sqrt(F_ii)): the error
              of each gradient component relative to its size or to the standard deviation of that
              score component under the model, whichever is larger (a component crossing zero is
              judged on its natural scale)
  fd rel      closed-form directional derivative vs a 4th-order central finite difference (step 1e-3,
              3 random directions), both in float64 at the row's inputs, random inputs only
  fisher rel  closed-form fisher vs the expected Hessian (exact or quadrature expectation over the
              targets), |a_ij - b_ij| / sqrt(b_ii b_jj); '-' where no closed form exists
  tol         the row's tolerance for grad rel and fisher rel (by dtype); fd rel must be <= {fd:.0e}"""


def _concat(a, b):
    """Two input trees joined along the batch axis (b's leaves cast to a's dtypes)."""
    return jax.tree.map(lambda x, y: jnp.concatenate([x, jnp.asarray(y).astype(x.dtype)], axis=0), a, b)


def _batch_size(tree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def case_program(case: Case, dtype, batch: int):
    """``key -> (outputs, arrays)``: the case's random and extreme inputs as one batch, checked."""
    dtype = np.dtype(dtype)

    def run(key):
        k_inputs, k_fd = jax.random.split(key)
        outputs, targets = case.random(k_inputs, dtype, batch)
        extreme_outputs, extreme_targets = case.extreme(dtype)
        extra = _batch_size(extreme_outputs)
        outputs = _concat(outputs, extreme_outputs)
        targets = _concat(targets, extreme_targets)
        mask = jnp.arange(batch + extra) < batch
        arrays = cg.evaluate(case.family, outputs, targets, key=k_fd, finite_differences=True, fd_mask=mask)
        return outputs, arrays

    return jax.jit(run)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1e}"


def _compile_all(jobs, key, threads: int):
    """Compile every job's program (a pool of threads); returns the compiled programs in order."""
    def compile_one(job):
        with cg.x64_scope():
            return job.lower(key).compile()

    if threads <= 1:
        return [compile_one(job) for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(compile_one, jobs))


def run_check(cases: Sequence[Case], *, dtypes: Sequence[str] = DTYPES, seed: int = 0, batch: int = 64,
              threads: int | None = None, out=None) -> int:
    """Check ``cases`` in ``dtypes``; print one row per case and dtype, and a footer. Returns the
    number of failing rows (0 when everything passes)."""
    out = sys.stdout if out is None else out
    threads = threads or min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    rows = [(case, np.dtype(d)) for case in cases for d in dtypes]
    print(f"checking {len(cases)} cases x {len(dtypes)} dtypes on {jax.default_backend()}: compiling "
          f"{len(rows)} programs ({threads} threads) ...", file=out, flush=True)
    key = jax.random.PRNGKey(seed)
    with cg.x64_scope():
        programs = [case_program(case, dtype, batch) for case, dtype in rows]
        compiled = _compile_all(programs, key, threads)
    print(f"compiled in {time.perf_counter() - start:.1f} s", file=out, flush=True)
    width = max([len(c.name) for c in cases] + [6])
    header = f"{'family':<{width}} {'dtype':<8} {'grad rel':>9} {'fd rel':>9} {'fisher rel':>10} {'tol':>7}  result"
    print(header, file=out)
    print("-" * len(header), file=out)
    failures = 0
    for (case, dtype), program in zip(rows, compiled):
        with cg.x64_scope():
            outputs, arrays = program(key)
        result = cg.judge(case.family, outputs, arrays)
        failures += not result.passed
        print(f"{case.name:<{width}} {dtype.name:<8} {_fmt(result.grad_rel_err):>9} {_fmt(result.fd_rel_err):>9} "
              f"{_fmt(result.fisher_rel_err):>10} {result.rtol:>7.0e}  {'pass' if result.passed else 'FAIL'}",
              file=out, flush=True)
    elapsed = time.perf_counter() - start
    print(f"\n{len(rows) - failures} passed, {failures} failed in {elapsed:.1f} s "
          f"({batch} random + the extreme inputs per row)\n", file=out)
    print(FOOTER.format(fd=tolerances.FD_RTOL), file=out)
    return failures


def select(cases: Sequence[Case], names: Sequence[str]) -> list[Case]:
    """The cases whose name, or whose family's class name, is in ``names``; unknown names raise."""
    if not names:
        return list(cases)
    chosen = [c for c in cases if c.name in names or type(c.family).__name__ in names]
    known = {c.name for c in cases} | {type(c.family).__name__ for c in cases}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown family {unknown}; `python -m mlnll check --list` lists them.")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlnll", description="mlnll's verification command.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("check", help="closed-form gradients and Fisher vs autodiff and finite differences",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--family", action="append", default=[], metavar="NAME",
                     help="a row name or a family class name (repeatable); default: every family")
    run.add_argument("--dtype", action="append", choices=DTYPES, default=[], help="repeatable; default: both")
    run.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                     help="also check the families (with check_cases) defined in MODULE")
    run.add_argument("--list", action="store_true", help="list the rows and exit")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--batch", type=int, default=64, help="random inputs per row")
    run.add_argument("--threads", type=int, default=None, help="compile threads (default: the CPU count, <= 8)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 rows; float32 inputs stay float32
    cases = registry.builtin_cases() + registry.import_cases(args.modules)
    if args.list:
        for case in cases:
            print(f"{case.name:<28} {case.family!r}")
        return 0
    failures = run_check(select(cases, args.family), dtypes=args.dtype or DTYPES, seed=args.seed,
                         batch=args.batch, threads=args.threads)
    return 1 if failures else 0
