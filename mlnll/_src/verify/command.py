"""``python -m mlnll check``: every family's closed forms against autodiff on this backend.

Each row of the check table (``registry``) runs as one jit-compiled program per dtype: the
random inputs are drawn inside it and joined with the fixed extreme ones into one batch, and the
program returns everything ``check_grad`` compares (``check_grad.evaluate``). Rows are spread
over worker processes (tracing is Python and compiling is most of the time, so threads would
not help), and printed in table order as they finish.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
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
# The check programs run once on a few dozen rows: LLVM's optimisation passes would cost more
# compile time than they could save (the arithmetic is the same IEEE code; nothing is fast-math).
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}

FOOTER = """\
columns (each the largest over the row's random and extreme inputs):
  grad rel    closed-form grad vs jax.grad of -log_prob, |a - b| / max(|a|, |b|, sqrt(F_ii)): the error
              of each gradient component relative to its size or to the standard deviation of that
              score component under the model, whichever is larger (a component crossing zero is
              judged on its natural scale)
  fd rel      closed-form directional derivative vs a 4th-order central finite difference (the better
              of steps 1e-3 and 2.5e-4, 3 random directions), both in float64 at the row's inputs, random inputs only; float64 rows
              ('-' in float32 rows: the same float64 computation)
  fisher rel  closed-form fisher vs the expected Hessian (exact or quadrature expectation over the
              targets), |a_ij - b_ij| / sqrt(b_ii b_jj); '-' where no closed form exists
  tol         the row's tolerance for grad rel and fisher rel (by dtype); fd rel must be <= {fd:.0e}"""


def _concat(a, b):
    """Two input trees joined along the batch axis (b's leaves cast to a's dtypes)."""
    return jax.tree.map(lambda x, y: jnp.concatenate([x, jnp.asarray(y).astype(x.dtype)], axis=0), a, b)


def _batch_size(tree) -> int:
    return jax.tree.leaves(tree)[0].shape[0]


def case_program(case: Case, dtype, batch: int, seed: int):
    """``key -> (outputs, targets, arrays)``: the case's random inputs (the first ``batch``
    examples) and extreme inputs as one batch, and everything the check compares there.

    Finite differences run in the float64 row only: they are computed in float64 whatever the
    dtype, so a float32 row would repeat the float64 row's check of the derivation.
    """
    dtype = np.dtype(dtype)
    finite_differences = dtype == np.float64

    def run(key):
        outputs, targets = case.random(key, dtype, batch)
        extreme_outputs, extreme_targets = case.extreme(dtype)
        extra = _batch_size(extreme_outputs)
        outputs = _concat(outputs, extreme_outputs)
        targets = _concat(targets, extreme_targets)
        mask = jnp.arange(batch + extra) < batch
        arrays = cg.evaluate(case.family, outputs, targets, seed=seed, finite_differences=finite_differences,
                             fd_mask=mask)
        return outputs, targets, arrays

    return jax.jit(run)


def row_arrays(case: Case, dtype, *, index: int, seed: int = 0, batch: int = 64) -> tuple:
    """``(outputs, targets, arrays)`` of one row: the case's program for ``dtype`` compiled (at
    XLA backend level 0: it runs once) and run; ``check_row`` judges the arrays."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
    with cg.x64_scope():
        program = case_program(case, dtype, batch, seed).lower(key).compile(compiler_options=COMPILER_OPTIONS)
        return program(key)


def check_row(case: Case, dtype, *, index: int, seed: int = 0, batch: int = 64) -> cg.GradCheck:
    """One row of the table: compile the case's program for ``dtype``, run it, judge it."""
    outputs, _, arrays = row_arrays(case, dtype, index=index, seed=seed, batch=batch)
    return cg.judge(case.family, outputs, arrays)


# -- worker processes: each imports mlnll once and checks the rows it is given ---------------------

_WORKER_CASES: dict[str, Case] = {}


def _worker_init(modules: tuple[str, ...]) -> None:
    jax.config.update("jax_enable_x64", True)
    for case in registry.builtin_cases() + registry.import_cases(modules):
        _WORKER_CASES[case.name] = case


def _worker_row(name: str, dtype: str, index: int, seed: int, batch: int) -> cg.GradCheck:
    return check_row(_WORKER_CASES[name], dtype, index=index, seed=seed, batch=batch)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1e}"


def _results(rows, *, seed, batch, workers, modules):
    """Yield ``(row number, GradCheck)`` as rows finish (in any order when ``workers > 1``)."""
    if workers <= 1:
        for i, (case, dtype, index) in enumerate(rows):
            yield i, check_row(case, dtype, index=index, seed=seed, batch=batch)
        return
    context = multiprocessing.get_context("spawn")  # JAX is multithreaded: never fork it
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                initargs=(tuple(modules),)) as pool:
        futures = {pool.submit(_worker_row, case.name, dtype.name, index, seed, batch): i
                   for i, (case, dtype, index) in enumerate(rows)}
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()


def run_check(cases: Sequence[Case], *, dtypes: Sequence[str] = DTYPES, seed: int = 0, batch: int = 64,
              workers: int = 1, modules: Sequence[str] = (), out=None) -> int:
    """Check ``cases`` in ``dtypes``; print one row per case and dtype, and a footer. Returns the
    number of failing rows (0 when everything passes).

    ``workers > 1`` checks the rows in that many processes (each compiles its rows' programs; the
    cases must then come from the registry and ``modules``, which the workers import by name).
    """
    out = sys.stdout if out is None else out
    start = time.perf_counter()
    indices = {case.name: i for i, case in enumerate(cases)}
    rows = [(case, np.dtype(d), indices[case.name]) for case in cases for d in dtypes]
    where = f"{workers} processes" if workers > 1 else "in this process"
    print(f"checking {len(cases)} cases x {len(dtypes)} dtypes on {jax.default_backend()} ({where}) ...",
          file=out, flush=True)
    width = max([len(c.name) for c in cases] + [6])
    header = f"{'family':<{width}} {'dtype':<8} {'grad rel':>9} {'fd rel':>9} {'fisher rel':>10} {'tol':>7}  result"
    print(header, file=out)
    print("-" * len(header), file=out, flush=True)
    done: dict[int, cg.GradCheck] = {}
    printed = failures = 0
    for i, result in _results(rows, seed=seed, batch=batch, workers=workers, modules=modules):
        done[i] = result
        while printed in done:  # rows are printed in table order, each as soon as it can be
            (case, dtype, _), r = rows[printed], done[printed]
            failures += not r.passed
            print(f"{case.name:<{width}} {dtype.name:<8} {_fmt(r.grad_rel_err):>9} {_fmt(r.fd_rel_err):>9} "
                  f"{_fmt(r.fisher_rel_err):>10} {r.rtol:>7.0e}  {'pass' if r.passed else 'FAIL'}",
                  file=out, flush=True)
            printed += 1
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
    run.add_argument("--workers", type=int, default=None,
                     help="processes that compile and run the rows (default: the CPU count, at most 8)")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 rows; float32 inputs stay float32
    cases = registry.builtin_cases() + registry.import_cases(args.modules)
    if args.list:
        for case in cases:
            print(f"{case.name:<28} {case.family!r}")
        return 0
    chosen = select(cases, args.family)
    dtypes = args.dtype or DTYPES
    workers = args.workers or min(8, os.cpu_count() or 1, len(chosen) * len(dtypes))
    failures = run_check(chosen, dtypes=dtypes, seed=args.seed, batch=args.batch, workers=workers,
                         modules=args.modules)
    return 1 if failures else 0
