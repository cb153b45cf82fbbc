"""mlnll speed benchmarks: every figure a ratio to a peer measured side by side in one process.

Run from the repository root:

    python benchmarks/bench.py            # full run (about 10 minutes on 2 CPU cores)
    python benchmarks/bench.py --quick    # fewer rounds and smaller scaling sweeps (a smoke test)
    python benchmarks/bench.py --only fused-rl       # the fused RL / distillation rows (time + memory)
    python benchmarks/bench.py --only fused-memory   # their compiled temporary memory only (no timing)
    python benchmarks/bench.py --only fused-rl --fused-shape 8192,4096,128256 \
        --fused-big 8192,4096,128256 --fused-dtype bfloat16   # the GPU table of issue 16

It prints a markdown report and writes it to ``benchmarks/results/<backend>.md``, with the scaling
plot in ``benchmarks/results/scaling-<backend>.png``. Method: every function is jitted and
compiled first (six times from cold caches, in alternating order; the median compile time is reported on its own), called twice to warm up, then the functions
of one table are called in turn, round after round (interleaved, so that drifting machine load
hits all of them alike); a figure is the median over rounds and a ratio is a ratio of medians.
Value + grad means ``jax.jit(jax.value_and_grad(loss))`` with respect to the network outputs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import mlnll

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------------
# Timing


COMPILE_PASSES = 6


def compile_seconds(fn, *args) -> tuple[object, float]:
    """``(compiled, seconds)``: ahead-of-time lowering and compilation of ``jax.jit(fn)``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def interleaved(named_fns: dict, args: tuple, rounds: int) -> dict[str, dict]:
    """Compile, warm up, then time every function once per round, in turn. Seconds per call."""
    compiled, stats, compile_times = {}, {}, {name: [] for name in named_fns}
    # Each function is traced and compiled COMPILE_PASSES times from cold caches, the passes
    # alternating which function goes first, and the median is reported. The same program's compile
    # time on a shared 2-core machine ranges over a factor ~2, and it falls over the first passes of
    # a process (0.50 s -> 0.25 s for jss.gamma's value + grad at 4M elements), so neither the first
    # pass nor the fastest is a stable figure.
    names = list(named_fns)
    for i in range(COMPILE_PASSES):
        jax.clear_caches()  # every pass compiles from scratch, in a warm process
        for name in (names if i % 2 == 0 else names[::-1]):
            compiled[name], seconds = compile_seconds(named_fns[name], *args)
            compile_times[name].append(seconds)
    for name in named_fns:
        analysis = compiled[name].memory_analysis()
        temp_mb = None if analysis is None else analysis.temp_size_in_bytes / 2**20
        stats[name] = {"compile": statistics.median(compile_times[name]), "times": [], "temp_mb": temp_mb}
    for _ in range(2):
        for name in named_fns:
            jax.block_until_ready(compiled[name](*args))
    names = list(named_fns)
    for entry in stats.values():
        entry["cpu_times"] = []
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled[name](*args))
            stats[name]["cpu_times"].append(time.process_time() - cpu_start)
            stats[name]["times"].append(time.perf_counter() - start)
    for entry in stats.values():
        times = sorted(entry["times"])
        entry["median"] = statistics.median(times)
        entry["cpu"] = statistics.median(entry["cpu_times"])  # CPU seconds of this process, all threads
        q1, q3 = np.percentile(times, [25, 75])
        entry["spread"] = (q3 - q1) / entry["median"]  # interquartile range / median
    return stats


def value_and_grad(loss):
    return jax.value_and_grad(loss)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


# ------------------------------------------------------------------------------------------------
# Tables


def categorical_table(rounds: int, rows: int = 4096, classes: int = 32000) -> tuple[list[str], dict]:
    """Categorical NLL value+grad vs optax and vs the memory floor ``z * 2.0``."""
    from mlnll._src.families.categorical import cross_entropy_logits

    loss = mlnll.nll(mlnll.Categorical())
    lines = [
        f"### Categorical NLL, value + grad, logits [{rows}, {classes}], integer labels",
        "",
        "Wall-clock medians; the CPU columns are the same ratios in CPU time of this process "
        "(steadier when other processes share the cores).",
        "",
        "| dtype | implementation | ms | / optax | / floor | CPU / optax | CPU / floor | compile s | spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    names = {
        "mlnll": "`mlnll.nll(Categorical())(z, y)`",
        "kernel": "its label kernel `cross_entropy_logits(z, y).mean()` (internal)",
        "optax": "`optax.softmax_cross_entropy_with_integer_labels(z, y).mean()`",
        "floor": "floor: `z * 2.0` (one read, one write)",
    }
    for dtype in (jnp.float32, jnp.bfloat16):
        kz, ky = jax.random.split(jax.random.PRNGKey(0))
        z = (3 * jax.random.normal(kz, (rows, classes), jnp.float32)).astype(dtype)
        y = jax.random.randint(ky, (rows,), 0, classes)
        fns = {
            "mlnll": value_and_grad(lambda z, y: loss(z, y)),
            "kernel": value_and_grad(lambda z, y: jnp.mean(cross_entropy_logits(z, y))),
            "optax": value_and_grad(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()),
            "floor": lambda z, y: z * 2.0,  # the least any value + grad must do
        }
        s = interleaved(fns, (z, y), rounds)
        name = jnp.dtype(dtype).name
        for key, label in names.items():
            e = s[key]
            lines.append(
                f"| {name} | {label} | {ms(e['median'])} | **{e['median'] / s['optax']['median']:.2f}** "
                f"| **{e['median'] / s['floor']['median']:.2f}** | {e['cpu'] / s['optax']['cpu']:.2f} "
                f"| {e['cpu'] / s['floor']['cpu']:.2f} | {e['compile']:.2f} | {e['spread']:.2f} |"
            )
            summary[f"{name} {key}/optax"] = e["median"] / s["optax"]["median"]
            summary[f"{name} {key}/floor"] = e["median"] / s["floor"]["median"]
        del z
    return lines, summary


def _poisson_plain(log_rate, y):
    return jnp.mean(jnp.exp(log_rate) - y * log_rate + jax.scipy.special.gammaln(y + 1))


def _normal_plain(outputs, y):
    loc, log_scale = outputs
    return jnp.mean(0.5 * jnp.square((y - loc) * jnp.exp(-log_scale)) + log_scale + 0.5 * np.log(2 * np.pi))


def families_table(rounds: int, size: int = 2**24) -> tuple[list[str], dict]:
    """Bernoulli, Normal, Poisson value+grad on ``size`` elements vs optax or the plain formula."""
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    z = 3 * jax.random.normal(keys[0], (size,))
    labels = jax.random.bernoulli(keys[1], 0.5, (size,)).astype(jnp.float32)
    loc, log_scale = jax.random.normal(keys[2], (size,)), 0.5 * jax.random.normal(keys[3], (size,))
    counts = jax.random.poisson(keys[1], 3.0, (size,)).astype(jnp.float32)
    cases = [
        ("Bernoulli", "optax.sigmoid_binary_cross_entropy", z, labels,
         mlnll.nll(mlnll.Bernoulli()), lambda z, y: optax.sigmoid_binary_cross_entropy(z, y).mean()),
        ("Normal (loc, log_scale)", "plain jax.numpy formula", (loc, log_scale), z,
         mlnll.nll(mlnll.Normal()), _normal_plain),
        ("Normal(scale=1)", "0.5 * optax.squared_error (+ const)", loc, z,
         mlnll.nll(mlnll.Normal(scale=1.0)), lambda m, y: jnp.mean(0.5 * optax.squared_error(m, y) + 0.5 * np.log(2 * np.pi))),
    ]
    if hasattr(mlnll, "Poisson"):
        cases.append(("Poisson (log_rate)", "plain jax.numpy formula (gammaln)", 0.3 * z, counts,
                      mlnll.nll(mlnll.Poisson()), _poisson_plain))
    lines = [
        f"### Other families, value + grad, {size:,} float32 elements",
        "",
        "| family | peer | mlnll ms | peer ms | mlnll / peer | CPU mlnll / peer | compile s (mlnll, peer) | spread (mlnll, peer) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for name, peer_name, outputs, targets, ours, peer in cases:
        fns = {"mlnll": value_and_grad(lambda o, t, ours=ours: ours(o, t)), "peer": value_and_grad(peer)}
        s = interleaved(fns, (outputs, targets), rounds)
        m, p = s["mlnll"]["median"], s["peer"]["median"]
        summary[name] = m / p
        lines.append(
            f"| {name} | {peer_name} | {ms(m)} | {ms(p)} | **{m / p:.2f}** | {s['mlnll']['cpu'] / s['peer']['cpu']:.2f} "
            f"| {s['mlnll']['compile']:.2f}, {s['peer']['compile']:.2f} | {s['mlnll']['spread']:.2f}, {s['peer']['spread']:.2f} |"
        )
    return lines, summary


def _temp_mb(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    return analysis.temp_size_in_bytes / 2**20


def fused_table(rounds: int, rows=2048, dim=512, vocab=50257, big=(8192, 512, 131072), run_big=False):
    """``linear_categorical_nll`` vs the materialised path (logits, then optax), then the RL and
    distillation functions (``fused_rl_rows``)."""
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    h = jax.random.normal(keys[0], (rows, dim))
    w = jax.random.normal(keys[1], (dim, vocab)) / np.sqrt(dim)
    y = jax.random.randint(keys[2], (rows,), 0, vocab)

    def materialized(h, w, y):
        return optax.softmax_cross_entropy_with_integer_labels(h @ w, y).mean()

    def fused(h, w, y):
        return mlnll.linear_categorical_nll(h, w, y)

    grad_args = (0, 1)
    vg = {"fused": jax.value_and_grad(fused, grad_args), "materialized": jax.value_and_grad(materialized, grad_args)}
    fwd = {"fused": fused, "materialized": materialized}
    s_vg = interleaved(vg, (h, w, y), rounds)
    s_fwd = interleaved(fwd, (h, w, y), rounds)
    mem = {k: s_vg[k]["temp_mb"] for k in vg}
    mem_fwd = {k: s_fwd[k]["temp_mb"] for k in fwd}
    lines = [
        f"### Fused linear + Categorical NLL, hidden [{rows}, {dim}], weight [{dim}, {vocab}], float32",
        "",
        "Materialised path: `optax.softmax_cross_entropy_with_integer_labels(hidden @ weight, labels).mean()`.",
        "",
        "| | fused | materialised | fused / materialised | CPU fused / materialised |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for label, stats, memory in (("value + grad", s_vg, mem), ("forward", s_fwd, mem_fwd)):
        f, m = stats["fused"]["median"], stats["materialized"]["median"]
        summary[f"{label} time"] = f / m
        summary[f"{label} temp memory"] = memory["fused"] / memory["materialized"]
        cpu = stats["fused"]["cpu"] / stats["materialized"]["cpu"]
        lines.append(f"| {label}: time ms | {ms(f)} | {ms(m)} | **{f / m:.2f}** | {cpu:.2f} |")
        lines.append(
            f"| {label}: temp memory MB | {memory['fused']:.1f} | {memory['materialized']:.1f} "
            f"| **{memory['fused'] / memory['materialized']:.3f}** | |"
        )
        lines.append(f"| {label}: compile s | {stats['fused']['compile']:.2f} | {stats['materialized']['compile']:.2f} | | |")
    lines += torch_linear_cross_entropy_rows(h, w, y, rounds, s_vg["fused"]["median"], summary)
    n, d, v = big
    shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
              jax.ShapeDtypeStruct((n,), jnp.int32))
    big_mb = _temp_mb(vg["fused"], *shapes)
    summary["big temp MB"] = big_mb
    lines += ["", f"hidden [{n}, {d}], weight [{d}, {v}]: value + grad compiles to **{big_mb:.0f} MB** of "
              f"temporary memory (the materialised logits alone would be {n * v * 4 / 2**20:.0f} MB)."]
    if run_big:
        args = (jax.random.normal(keys[0], (n, d)), jax.random.normal(keys[1], (d, v)) / np.sqrt(d),
                jax.random.randint(keys[2], (n,), 0, v))
        s_big = interleaved({"fused": vg["fused"]}, args, 1)
        lines.append(f"It runs in {s_big['fused']['median']:.1f} s.")
    rl_lines, summary["rl and distillation"] = fused_rl_rows(rounds, (rows, dim, vocab), big)
    return lines + [""] + rl_lines, summary


RL_TEMPERATURE = 0.7
ENTROPY_BONUS = 0.01


def _materialized_log_softmax(h, w):
    return jax.nn.log_softmax((h @ w).astype(jnp.float32) / RL_TEMPERATURE)


def _materialized_entropy(log_p):
    return -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)


def _rl_cases():
    """``(label, formula, fused, materialised, takes)``: value + grad in the student's hidden and
    weight; ``takes`` says which argument tuple the pair runs on (the labels' or the teacher's).
    The materialised paths compute the log-softmax of the ``[N, V]`` logits in float32 (also for
    bfloat16 inputs), as the fused functions do per block."""
    t, c = RL_TEMPERATURE, ENTROPY_BONUS

    def nll_fused(h, w, y, adv):
        return mlnll.linear_categorical_nll(h, w, y)

    def nll_materialized(h, w, y, adv):
        return optax.softmax_cross_entropy_with_integer_labels((h @ w).astype(jnp.float32), y).mean()

    def nll_entropy_fused(h, w, y, adv):
        loss, entropy = mlnll.linear_categorical_nll(h, w, y, temperature=t, return_entropy=True)
        return loss - c * entropy

    def nll_entropy_materialized(h, w, y, adv):
        log_p = _materialized_log_softmax(h, w)
        loss = -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=-1))
        return loss - c * jnp.mean(_materialized_entropy(log_p))

    def policy_fused(h, w, y, adv):
        log_p, entropy = mlnll.linear_categorical_logprobs(h, w, y, temperature=t, return_entropy=True)
        return -jnp.mean(adv * log_p) - c * jnp.mean(entropy)

    def policy_materialized(h, w, y, adv):
        log_p = _materialized_log_softmax(h, w)
        token = jnp.take_along_axis(log_p, y[:, None], axis=-1)[:, 0]
        return -jnp.mean(adv * token) - c * jnp.mean(_materialized_entropy(log_p))

    def kl_fused(direction):
        return lambda h, w, ht, wt: mlnll.linear_categorical_kl(h, w, ht, wt, temperature=t, direction=direction)

    def kl_materialized(direction):
        def loss(h, w, ht, wt):
            student = _materialized_log_softmax(h, w)
            teacher = _materialized_log_softmax(jax.lax.stop_gradient(ht), jax.lax.stop_gradient(wt))
            log_p, log_q = (teacher, student) if direction == "forward" else (student, teacher)
            return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))
        return loss

    return [
        ("`linear_categorical_nll(...)`", "`nll` (optax on the logits)", nll_fused, nll_materialized, "labels"),
        ("`linear_categorical_nll(..., temperature=0.7, return_entropy=True)`", "`nll - 0.01 * entropy`",
         nll_entropy_fused, nll_entropy_materialized, "labels"),
        ("`linear_categorical_logprobs(..., temperature=0.7, return_entropy=True)`",
         "`-mean(adv * logp) - 0.01 * mean(entropy)`", policy_fused, policy_materialized, "labels"),
        ("`linear_categorical_kl(..., direction=\"forward\", temperature=0.7)`", "`KL(teacher ‖ student)`",
         kl_fused("forward"), kl_materialized("forward"), "teacher"),
        ("`linear_categorical_kl(..., direction=\"reverse\", temperature=0.7)`", "`KL(student ‖ teacher)`",
         kl_fused("reverse"), kl_materialized("reverse"), "teacher"),
    ]


def _rl_shapes(rows: int, dim: int, vocab: int, dtype) -> dict:
    """The abstract arguments of each kind of case (compiling needs no data)."""
    matrix = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    return {"labels": (matrix(rows, dim), matrix(dim, vocab), jax.ShapeDtypeStruct((rows,), jnp.int32),
                       jax.ShapeDtypeStruct((rows,), jnp.float32)),
            "teacher": (matrix(rows, dim), matrix(dim, vocab), matrix(rows, dim), matrix(dim, vocab))}


def _rl_args(rows: int, dim: int, vocab: int, dtype) -> dict:
    keys = jax.random.split(jax.random.PRNGKey(5), 5)
    h = jax.random.normal(keys[0], (rows, dim)).astype(dtype)
    w = (jax.random.normal(keys[1], (dim, vocab)) / np.sqrt(dim)).astype(dtype)
    y = jax.random.randint(keys[2], (rows,), 0, vocab)
    return {"labels": (h, w, y, jax.random.normal(keys[3], (rows,))),  # advantages
            "teacher": (h, w, jax.random.normal(keys[4], (rows, dim)).astype(dtype),
                        (1.5 * jax.random.normal(keys[1], (dim, vocab)) / np.sqrt(dim)).astype(dtype))}


def _shape_text(shape, dtype) -> str:
    rows, dim, vocab = shape
    return f"hidden [{rows}, {dim}], weight [{dim}, {vocab}], {jnp.dtype(dtype).name}"


def fused_rl_rows(rounds: int, shape=(2048, 512, 50257), big=(8192, 512, 131072), dtype=jnp.float32,
                  timed: bool = True) -> tuple[list[str], dict]:
    """The issue-16 table: each fused function (value + grad in the student's hidden and weight)
    against the same formula on materialised logits (``jax.nn.log_softmax(hidden @ weight / t)``):
    time side by side (``timed``) and XLA's compiled temporary memory at ``shape`` and ``big``
    (compiled only; deterministic, so ``timed=False`` gives the memory columns alone)."""
    grad_args = (0, 1)
    lines = [
        f"### RL and distillation, value + grad in the student's hidden and weight, {_shape_text(shape, dtype)}",
        "",
        "Each against the same formula on materialised logits, `jax.nn.log_softmax(hidden @ weight / 0.7)` in "
        "float32 (the teacher's under `stop_gradient`; the plain NLL's peer is optax on `hidden @ weight`). "
        "Temporary memory is XLA's compiled `temp_size_in_bytes`, also at "
        f"{_shape_text(big, dtype)} (compiled only).",
        "",
    ]
    big_head = f"[{big[0]}, {big[2]}]: temp MB fused / materialised | **memory ratio**"
    if timed:
        lines += ["| function | objective | fused ms | materialised ms | **time ratio** | CPU ratio | temp MB fused / "
                  f"materialised | **memory ratio** | {big_head} | compile s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        args = _rl_args(*shape, dtype)
    else:
        lines += [f"| function | objective | temp MB fused / materialised | **memory ratio** | {big_head} |",
                  "|---|---|---|---|---|---|"]
    shapes, big_shapes = _rl_shapes(*shape, dtype), _rl_shapes(*big, dtype)
    summary = {}
    for label, formula, fused, materialized, takes in _rl_cases():
        fns = {"fused": jax.value_and_grad(fused, grad_args), "materialized": jax.value_and_grad(materialized, grad_args)}
        big_f, big_m = (_temp_mb(fns[k], *big_shapes[takes]) for k in ("fused", "materialized"))
        if timed:
            s = interleaved(fns, args[takes], rounds)
            mem_f, mem_m = s["fused"]["temp_mb"], s["materialized"]["temp_mb"]
        else:
            mem_f, mem_m = (_temp_mb(fns[k], *shapes[takes]) for k in ("fused", "materialized"))
        summary[label] = {"memory": mem_f / mem_m, "big memory": big_f / big_m}
        memory = f"| {mem_f:.1f} / {mem_m:.1f} | **{mem_f / mem_m:.3f}** | {big_f:.0f} / {big_m:.0f} | **{big_f / big_m:.4f}** "
        if timed:
            f, m = s["fused"]["median"], s["materialized"]["median"]
            summary[label]["time"] = f / m
            lines.append(
                f"| {label} | {formula} | {ms(f)} | {ms(m)} | **{f / m:.2f}** | {s['fused']['cpu'] / s['materialized']['cpu']:.2f} "
                + memory + f"| {s['fused']['compile']:.2f}, {s['materialized']['compile']:.2f} |"
            )
        else:
            lines.append(f"| {label} | {formula} " + memory + "|")
    return lines, summary


def checked_table(rounds: int, size: int = 2**24, rows: int = 4096, classes: int = 32000):
    """``mlnll.checked(loss)`` against ``loss`` itself, value + grad inside one ``jax.jit``."""
    keys = jax.random.split(jax.random.PRNGKey(4), 4)
    cases = [
        (f"Bernoulli, {size:,} logits", mlnll.nll(mlnll.Bernoulli()), 3 * jax.random.normal(keys[0], (size,)),
         jax.random.bernoulli(keys[1], 0.5, (size,)).astype(jnp.float32)),
        (f"Categorical, logits [{rows}, {classes}]", mlnll.nll(mlnll.Categorical()),
         3 * jax.random.normal(keys[2], (rows, classes)), jax.random.randint(keys[3], (rows,), 0, classes)),
    ]
    lines = ["### `mlnll.checked(loss)`: the cost of the value checks, value + grad, float32", "",
             "| loss | unchecked ms | checked ms | checked / unchecked | compile s (unchecked, checked) |",
             "|---|---|---|---|---|"]
    summary = {}
    for name, loss, outputs, targets in cases:
        safe = mlnll.checked(loss)
        fns = {"unchecked": jax.value_and_grad(lambda o, t, f=loss: f(o, t)),
               "checked": jax.value_and_grad(lambda o, t, f=safe: f(o, t))}
        s = interleaved(fns, (outputs, targets), rounds)
        u, c = s["unchecked"]["median"], s["checked"]["median"]
        summary[name] = c / u
        lines.append(f"| {name} | {ms(u)} | {ms(c)} | **{c / u:.2f}** "
                     f"| {s['unchecked']['compile']:.2f}, {s['checked']['compile']:.2f} |")
        del outputs
    return lines, summary


def _torch_timings(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds per call of torch closures, called in turn round after round (2 warm-ups)."""
    times = {name: [] for name in fns}
    for _ in range(2):
        for fn in fns.values():
            fn()
    for r in range(rounds):
        order = list(fns)[r % len(fns):] + list(fns)[: r % len(fns)]
        for name in order:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def torch_linear_cross_entropy_rows(h, w, y, rounds: int, fused_seconds: float, summary: dict) -> list[str]:
    """torch's ``F.linear_cross_entropy`` (value + grad in hidden and weight) as a peer, if installed.

    Two torch paths on the same arrays: the chunked one (``options=LinearCrossEntropyOptions()``,
    torch's own auto-tuned chunking) and the reference path (``options=None``: logits, then
    ``cross_entropy``). Timed after the JAX table in the same process (torch and XLA do not share a
    scheduler, so they are not interleaved call by call); the ratio is mlnll fused / torch.
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return ["", "(torch is not installed: no `F.linear_cross_entropy` column.)"]
    if not hasattr(F, "linear_cross_entropy"):
        return ["", f"(torch {torch.__version__} has no `F.linear_cross_entropy`.)"]
    th = torch.tensor(np.asarray(h), requires_grad=True)
    tw = torch.tensor(np.asarray(w).T.copy(), requires_grad=True)  # torch's weight is [vocab, dim]
    ty = torch.tensor(np.asarray(y), dtype=torch.long)

    def step(options):
        def run():
            th.grad = tw.grad = None
            F.linear_cross_entropy(th, tw, ty, options=options).backward()
        return run

    medians = _torch_timings({"chunked": step(torch.nn.LinearCrossEntropyOptions()), "reference": step(None)},
                             max(3, rounds))
    lines = ["", f"torch {torch.__version__} `F.linear_cross_entropy`, value + grad in hidden and weight, "
             f"same arrays, {torch.get_num_threads()} threads:", "",
             "| torch path | torch ms | mlnll fused / torch |", "|---|---|---|"]
    for name, label in (("chunked", "chunked, `options=LinearCrossEntropyOptions()`"),
                        ("reference", "materialised, `options=None`")):
        ratio = fused_seconds / medians[name]
        summary[f"fused / torch {name}"] = ratio
        lines.append(f"| {label} | {ms(medians[name])} | **{ratio:.2f}** |")
    return lines


def scaling(rounds: int, row_sweep, class_sweep, fixed_classes: int, fixed_rows: int):
    """Categorical value+grad time against N (rows) and C (classes), float32, with the plot data."""
    from mlnll._src.families.categorical import cross_entropy_logits

    loss = mlnll.nll(mlnll.Categorical())
    fns = {
        "mlnll": value_and_grad(lambda z, y: loss(z, y)),
        "label kernel": value_and_grad(lambda z, y: jnp.mean(cross_entropy_logits(z, y))),
        "optax": value_and_grad(lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y).mean()),
        "floor z * 2.0": lambda z, y: z * 2.0,
    }
    data = {"rows": {}, "classes": {}}
    lines = ["### Scaling: Categorical value + grad, float32 (ms)", "",
             "| N x C | " + " | ".join(fns) + " | mlnll / optax | mlnll / floor | kernel / optax | kernel / floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for axis, sweep in (("rows", row_sweep), ("classes", class_sweep)):
        for value in sweep:
            n, c = (value, fixed_classes) if axis == "rows" else (fixed_rows, value)
            kz, ky = jax.random.split(jax.random.PRNGKey(3))
            z = 3 * jax.random.normal(kz, (n, c))
            y = jax.random.randint(ky, (n,), 0, c)
            s = interleaved(fns, (z, y), rounds)
            med = {k: s[k]["median"] for k in fns}
            data[axis][value] = med
            floor = med["floor z * 2.0"]
            lines.append(f"| {n} x {c} | " + " | ".join(ms(med[k]) for k in fns)
                         + f" | {med['mlnll'] / med['optax']:.2f} | {med['mlnll'] / floor:.2f}"
                         + f" | {med['label kernel'] / med['optax']:.2f} | {med['label kernel'] / floor:.2f} |")
            del z
    return lines, data


def plot_scaling(data, path: pathlib.Path, fixed_classes: int, fixed_rows: int) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, axis, label in ((axes[0], "rows", f"N (rows), C = {fixed_classes}"),
                            (axes[1], "classes", f"C (classes), N = {fixed_rows}")):
        xs = sorted(data[axis])
        for name in next(iter(data[axis].values())):
            ax.plot(xs, [data[axis][x][name] * 1e3 for x in xs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("value + grad, ms (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"Categorical NLL value + grad, float32, {jax.default_backend()}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    return (f"{cpu}, {os.cpu_count()} cores; backend {jax.default_backend()} ({device.device_kind}, "
            f"{jax.device_count()} device(s)); Python {platform.python_version()}, jax {jax.__version__}, "
            f"jaxlib {jaxlib.__version__}, optax {optax.__version__}")


TABLES = ("categorical", "families", "every-family", "checked", "fused", "fused-rl", "fused-memory", "scaling")


def _shape(text: str) -> tuple[int, int, int]:
    rows, dim, vocab = (int(v) for v in text.split(","))
    return rows, dim, vocab


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sweeps (a smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per table (default 15, quick 3)")
    parser.add_argument("--run-big", action="store_true", help="also time the N=8192, V=131072 fused call")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="results folder")
    parser.add_argument("--fused-shape", type=_shape, default=None, metavar="N,D,V",
                        help="the fused-rl and fused-memory tables' timed shape (default 2048,512,50257; "
                        "quick 256,512,8192)")
    parser.add_argument("--fused-big", type=_shape, default=(8192, 512, 131072), metavar="N,D,V",
                        help="their compiled-only memory shape (default 8192,512,131072)")
    parser.add_argument("--fused-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="the inputs' dtype in fused-rl and fused-memory (default float32)")
    parser.add_argument("--only", choices=TABLES, action="append", default=None,
                        help="run only this table (repeatable); the report goes to <backend>-<tables>.md "
                        "and the full report is left as it is")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 15)
    fused_shape = args.fused_shape or ((256, 512, 8192) if args.quick else (2048, 512, 50257))
    fused_dtype = jnp.dtype(args.fused_dtype)
    try:  # imported here: family_speed imports this module's timing functions
        import family_speed  # run as a script from benchmarks/ or the repository root
    except ImportError:  # imported as benchmarks.bench
        from benchmarks import family_speed
    backend = jax.default_backend()
    command = " ".join(["python benchmarks/bench.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.timezone.utc)
    report = [
        f"# mlnll benchmarks ({backend})",
        "",
        f"- Machine: {machine()}",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; command: `{command}`",
        f"- Method: {rounds} interleaved rounds per table after compile + 2 warm-up calls; medians; "
        "ratios are ratios of medians measured in this one process. Spread = interquartile range / median.",
        f"- Load average at start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes share the cores).",
        "",
    ]
    summary = {}
    for title, fn in (
        ("categorical", lambda: categorical_table(rounds)),
        ("families", lambda: families_table(rounds, 2**20 if args.quick else 2**24)),
        ("every-family", lambda: family_speed.table(rounds, 2**18 if args.quick else 2**22)),
        ("checked", lambda: checked_table(rounds, *((2**20, 512, 8192) if args.quick else ()))),
        ("fused", lambda: fused_table(max(3, rounds // 3), **({"rows": 256, "vocab": 8192} if args.quick else {}),
                                      run_big=args.run_big)),
        # The issue-16 rows alone (also part of "fused"): timed, or their compiled memory only.
        ("fused-rl", lambda: fused_rl_rows(max(3, rounds // 3), fused_shape, args.fused_big, fused_dtype)),
        ("fused-memory", lambda: fused_rl_rows(0, fused_shape, args.fused_big, fused_dtype, timed=False)),
    ):
        if title in ("fused-rl", "fused-memory") and not (args.only and title in args.only):
            continue  # in the full run, "fused" has these rows already
        if args.only and title not in args.only:
            continue
        lines, summary[title] = fn()
        report += lines + [""]
        print("\n".join(lines) + "\n", flush=True)
    if args.only and "scaling" not in args.only:
        return _write_report(report, started, args.out / f"{backend}-{'-'.join(args.only)}.md")
    row_sweep = (1024, 2048, 4096) if args.quick else (1024, 2048, 4096, 8192, 16384)
    class_sweep = (8192, 16384, 32768) if args.quick else (8192, 16384, 32768, 65536, 131072)
    fixed_classes, fixed_rows = 8192, 1024
    lines, data = scaling(max(3, rounds // 3), row_sweep, class_sweep, fixed_classes, fixed_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / f"scaling-{backend}.png"
    if plot_scaling(data, plot, fixed_classes, fixed_rows):
        lines += ["", f"![scaling]({plot.name})"]
    report += lines + [""]
    print("\n".join(lines) + "\n", flush=True)
    suffix = "-quick" if args.quick else "" if not args.only else "-" + "-".join(args.only)
    return _write_report(report, started, args.out / f"{backend}{suffix}.md", plot)


def _write_report(report: list[str], started, out: pathlib.Path, plot: pathlib.Path | None = None) -> int:
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    report.append(f"Total benchmark time: {elapsed:.0f} s.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(report) + "\n")
    print(f"Wrote {out}" + (f" and {plot}" if plot is not None and plot.exists() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
