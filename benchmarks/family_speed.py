"""Every family's value + grad against the formula a user would write instead, side by side.

Run from the repository root:

    python benchmarks/family_speed.py                   # every family, 4M float32 elements
    python benchmarks/family_speed.py --family Gamma    # one row (repeatable)
    python benchmarks/family_speed.py --size 1048576 --rounds 5

The peer is what a user choosing not to use mlnll would differentiate with ``jax.grad``: the
``jax.scipy.stats`` log-density of the mapped parameters (``exp`` of a log-scale, ``sigmoid`` of a
logit), or, where jax.scipy.stats has no such distribution, the plain ``jax.numpy`` formula.
Both sides are ``jax.jit(jax.value_and_grad(mean NLL))`` with respect to the raw outputs, targets
passed as arguments, timed interleaved in one process (``bench.interleaved``); a ratio is a ratio
of medians. ``bench.py`` includes this table in its report.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.stats as jss
import numpy as np

import mlnll

try:
    from bench import interleaved, ms  # run as a script from benchmarks/ or the repository root
except ImportError:  # imported as benchmarks.family_speed
    from benchmarks.bench import interleaved, ms


class Row(NamedTuple):
    name: str
    peer_name: str
    family: Any
    inputs: Callable[[int], tuple[Any, Any]]  # size -> (outputs, targets)
    peer_log_prob: Callable[[Any, Any], jax.Array]  # (outputs, targets) -> per-example log p


def _keys(seed: int, n: int):
    return jax.random.split(jax.random.PRNGKey(seed), n)


# -- inputs: raw outputs of the size a training step sees, targets drawn near the model ----------


def _loc_scale(size, target="normal"):
    k = _keys(1, 3)
    loc, log_scale = jax.random.normal(k[0], (size,)), 0.5 * jax.random.normal(k[1], (size,))
    eps = {"normal": jax.random.normal, "cauchy": jax.random.cauchy, "laplace": jax.random.laplace,
           "logistic": jax.random.logistic, "t": lambda k, s: jax.random.t(k, 4.0, s)}[target](k[2], (size,))
    return (loc, log_scale), loc + jnp.exp(log_scale) * eps


def _logits_and(size, draw):
    k = _keys(2, 2)
    z = jax.random.normal(k[0], (size,))
    return z, draw(k[1], jax.nn.sigmoid(z)).astype(jnp.float32)


def _positive(size, draw):
    k = _keys(3, 3)
    a, b = 0.5 * jax.random.normal(k[0], (size,)), 0.5 * jax.random.normal(k[1], (size,))
    return (a, b), draw(k[2], a, b)


def _count_rate(size):
    k = _keys(4, 2)
    log_rate = 0.9 * jax.random.normal(k[0], (size,))
    return log_rate, jax.random.poisson(k[1], jnp.exp(log_rate)).astype(jnp.float32)


def _geometric_draw(key, p):
    u = jax.random.uniform(key, p.shape, minval=1e-7, maxval=1.0)
    return jnp.floor(jnp.log(u) / jnp.log1p(-p))


def _simplex_rows(rows, k):
    keys = _keys(5, 3)
    z = jax.random.normal(keys[0], (rows, k))
    return keys, z


def _multinomial_inputs(n):
    def inputs(size):
        rows = size // 16
        keys, z = _simplex_rows(rows, 16)
        y = jax.random.multinomial(keys[1], n, jax.nn.softmax(z)).astype(jnp.float32)
        return z, y
    return inputs


def _dirichlet_inputs(size):
    rows = size // 16
    keys, z = _simplex_rows(rows, 16)
    y = jax.random.dirichlet(keys[1], jnp.exp(0.5 * z))
    y = jnp.clip(y, 1e-30, 1.0)
    return 0.5 * z, y / jnp.sum(y, -1, keepdims=True)


def _mvn_inputs(size, d=16):
    rows = size // d
    keys = _keys(6, 3)
    loc = jax.random.normal(keys[0], (rows, d))
    raw = 0.3 * jax.random.normal(keys[1], (rows, d, d))
    return (loc, raw), loc + jax.random.normal(keys[2], (rows, d))


def _low_rank_inputs(d, r, elements_per_row=None):
    """(loc [N, d], cov_factor [N, d, r], log_cov_diag [N, d]) and targets drawn from the model;
    N = size // elements_per_row (default d), at least 2."""
    def inputs(size):
        rows = max(2, size // (elements_per_row or d))
        keys = _keys(11, 5)
        loc = jax.random.normal(keys[0], (rows, d))
        W = jax.random.normal(keys[1], (rows, d, r)) / math.sqrt(r)
        log_diag = 0.5 * jax.random.normal(keys[2], (rows, d))
        y = (loc + jnp.einsum("nij,nj->ni", W, jax.random.normal(keys[3], (rows, r)))
             + jnp.exp(0.5 * log_diag) * jax.random.normal(keys[4], (rows, d)))
        return (loc, W, log_diag), y
    return inputs


def _dense_low_rank_peer(o, y):
    """``jss.multivariate_normal.logpdf`` of the dense covariance ``W W^T + diag(exp(log_cov_diag))``."""
    loc, W, log_diag = o
    sigma = jnp.matmul(W, jnp.swapaxes(W, -1, -2)) + jnp.exp(log_diag)[..., None] * jnp.eye(loc.shape[-1])
    return jss.multivariate_normal.logpdf(y, loc, sigma)


def _sphere_inputs(size, d=3):
    """Directions [N, d], log-concentrations 0.5 N(0, 1) + 1 and targets drawn from the family (N d = size)."""
    rows = size // d
    keys = _keys(12, 3)
    outputs = (jax.random.normal(keys[0], (rows, d)), 1.0 + 0.5 * jax.random.normal(keys[1], (rows,)))
    return outputs, mlnll.VonMisesFisher().sample(keys[2], outputs)


def _mixture_inputs(size, k=8):
    rows = size // k
    keys = _keys(7, 4)
    logits = jax.random.normal(keys[0], (rows, k))
    loc, log_scale = 2 * jax.random.normal(keys[1], (rows, k)), 0.5 * jax.random.normal(keys[2], (rows, k))
    return (logits, (loc, log_scale)), jax.random.normal(keys[3], (rows,))


def _ordered_inputs(size, k=5):
    """eta [N] and raw cutpoints [N, k - 1] (N k = size), labels drawn by the latent logistic variable."""
    rows = size // k
    keys = _keys(9, 3)
    eta = jax.random.normal(keys[0], (rows,))
    raw = jnp.concatenate([jnp.full((rows, 1), -1.5), 0.3 * jax.random.normal(keys[1], (rows, k - 2))], axis=-1)
    latent = eta + jax.random.logistic(keys[2], (rows,))
    cut = jnp.cumsum(jnp.concatenate([raw[:, :1], jnp.exp(raw[:, 1:])], axis=-1), axis=-1)
    return (eta, raw), jnp.sum(cut < latent[:, None], axis=-1).astype(jnp.int32)


def _ranking_inputs(size, k=16):
    """Scores [N, k] and rankings drawn from the model by the Gumbel-top-k trick."""
    keys = _keys(10, 2)
    s = jax.random.normal(keys[0], (size // k, k))
    return s, jnp.argsort(-(s + jax.random.gumbel(keys[1], s.shape)), axis=-1).astype(jnp.int32)


def _zero_inflated_inputs(size):
    """Gate logits N(0, 1), log-rates 0.9 N(0, 1), counts from the zero-inflated model."""
    k = _keys(11, 3)
    gate, log_rate = jax.random.normal(k[0], (size,)), 0.9 * jax.random.normal(k[1], (size,))
    return (gate, log_rate), mlnll.ZeroInflated(mlnll.Poisson()).sample(k[2], (gate, log_rate))


def _hurdle_inputs(size):
    k = _keys(12, 3)
    zero_logit, log_rate = jax.random.normal(k[0], (size,)), 0.9 * jax.random.normal(k[1], (size,))
    return (zero_logit, log_rate), mlnll.Hurdle(mlnll.Poisson()).sample(k[2], (zero_logit, log_rate))


def _beta_binomial_inputs(size, n=20):
    k = _keys(13, 3)
    outputs = (0.7 * jax.random.normal(k[0], (size,)), 0.7 * jax.random.normal(k[1], (size,)))
    return outputs, mlnll.BetaBinomial(total_count=n).sample(k[2], outputs)


def _dirichlet_multinomial_inputs(size, n=10, k=16):
    keys = _keys(14, 2)
    log_a = 0.5 * jax.random.normal(keys[0], (size // k, k))
    return log_a, mlnll.DirichletMultinomial(total_count=n).sample(keys[1], log_a)


def _tweedie_inputs(size, power=1.5):
    """Log-means N(0, 1), log-dispersions 0.5 N(0, 1), targets from the compound Poisson-Gamma."""
    k = _keys(15, 3)
    outputs = (jax.random.normal(k[0], (size,)), 0.5 * jax.random.normal(k[1], (size,)))
    return outputs, mlnll.Tweedie(power=power).sample(k[2], outputs)


# -- peers: the log-density a user would write ----------------------------------------------------


def _zip_peer(o, y):
    """``log(g + (1 - g) e^-rate)`` at 0, ``log(1 - g) + jss.poisson.logpmf`` elsewhere."""
    g, rate = jax.nn.sigmoid(o[0]), jnp.exp(o[1])
    return jnp.where(y == 0, jnp.log(g + (1 - g) * jnp.exp(-rate)), jnp.log(1 - g) + jss.poisson.logpmf(y, rate))


def _hurdle_peer(o, y):
    """``log g`` at 0, ``log(1 - g) + jss.poisson.logpmf - log(1 - e^-rate)`` elsewhere."""
    g, rate = jax.nn.sigmoid(o[0]), jnp.exp(o[1])
    positive = jnp.log(1 - g) + jss.poisson.logpmf(y, rate) - jnp.log(1 - jnp.exp(-rate))
    return jnp.where(y == 0, jnp.log(g), positive)


def _dirichlet_multinomial_peer(n):
    def peer(log_a, y):
        a, lg = jnp.exp(log_a), jax.scipy.special.gammaln
        total = jnp.sum(a, -1)
        return (lg(n + 1.0) - jnp.sum(lg(y + 1), -1) + lg(total) - lg(n + total) + jnp.sum(lg(y + a) - lg(a), -1))
    return peer


def _plackett_luce_peer(s, ranking):
    """``sum_j (x_j - logsumexp(x_j, ..., x_K))`` by a reverse cumulative logsumexp, ``x = s[ranking]``."""
    x = jnp.take_along_axis(s, ranking, axis=-1)
    return jnp.sum(x - jax.lax.cumlogsumexp(x, axis=x.ndim - 1, reverse=True), axis=-1)


def _tril(raw):
    """The Cholesky factor of mlnll's raw ``scale_tril``: strict lower triangle, exp of the diagonal."""
    d = raw.shape[-1]
    strict = jnp.tril(raw, -1)
    return strict + jnp.exp(jnp.diagonal(raw, 0, -2, -1))[..., None] * jnp.eye(d)


def _mixture_peer(o, y):
    logits, (loc, log_scale) = o
    comp = jss.norm.logpdf(y[:, None], loc, jnp.exp(log_scale))
    return jax.nn.logsumexp(jax.nn.log_softmax(logits) + comp, axis=-1)


def _lognormal_peer(o, y):
    log_y = jnp.log(y)
    return jss.norm.logpdf(log_y, o[0], jnp.exp(o[1])) - log_y


def _tail_inputs(size, family):
    """Raw outputs (two standard normals, halved) and targets drawn from ``family`` itself (Gumbel,
    AsymmetricLaplace, Weibull: jax.random has no sampler for two of them)."""
    k = _keys(9, 3)
    outputs = (0.5 * jax.random.normal(k[0], (size,)), 0.5 * jax.random.normal(k[1], (size,)))
    return outputs, family.sample(k[2], outputs)


# The plain jax.numpy formulas a user would differentiate (jax.scipy.stats has none of these).
def _gumbel_peer(o, y):
    z = (y - o[0]) / jnp.exp(o[1])
    return -z - jnp.exp(-z) - o[1]


def _asymmetric_laplace_peer(tau):
    def peer(o, y):
        u = (y - o[0]) / jnp.exp(o[1])
        return math.log(tau * (1 - tau)) - o[1] - u * (tau - (u < 0))
    return peer


def _weibull_peer(o, y):
    k, z = jnp.exp(o[1]), y / jnp.exp(o[0])
    return o[1] - o[0] + (k - 1) * jnp.log(z) - z**k


def rows() -> list[Row]:
    sig = jax.nn.sigmoid
    return [
        Row("Bernoulli", "jss.bernoulli.logpmf(y, sigmoid(z))", mlnll.Bernoulli(),
            lambda n: _logits_and(n, jax.random.bernoulli), lambda z, y: jss.bernoulli.logpmf(y, sig(z))),
        Row("Binomial(20)", "jss.binom.logpmf(y, 20, sigmoid(z))", mlnll.Binomial(total_count=20),
            lambda n: _logits_and(n, lambda k, p: jax.random.binomial(k, 20, p)),
            lambda z, y: jss.binom.logpmf(y, 20, sig(z))),
        Row("Geometric", "jss.geom.logpmf(y + 1, sigmoid(z))", mlnll.Geometric(),
            lambda n: _logits_and(n, _geometric_draw), lambda z, y: jss.geom.logpmf(y + 1, sig(z))),
        Row("Poisson", "jss.poisson.logpmf(y, exp(log_rate))", mlnll.Poisson(),
            _count_rate, lambda lr, y: jss.poisson.logpmf(y, jnp.exp(lr))),
        Row("NegativeBinomial", "jss.nbinom.logpmf(y, r, r / (r + mu))", mlnll.NegativeBinomial(),
            lambda n: ((_count_rate(n)[0], 0.5 * _count_rate(n)[0][::-1]), _count_rate(n)[1]),
            lambda o, y: jss.nbinom.logpmf(y, jnp.exp(o[1]), jax.nn.sigmoid(o[1] - o[0]))),
        Row("Normal", "jss.norm.logpdf(y, loc, exp(log_scale))", mlnll.Normal(),
            _loc_scale, lambda o, y: jss.norm.logpdf(y, o[0], jnp.exp(o[1]))),
        Row("Laplace", "jss.laplace.logpdf(y, loc, exp(log_scale))", mlnll.Laplace(),
            lambda n: _loc_scale(n, "laplace"), lambda o, y: jss.laplace.logpdf(y, o[0], jnp.exp(o[1]))),
        Row("Cauchy", "jss.cauchy.logpdf(y, loc, exp(log_scale))", mlnll.Cauchy(),
            lambda n: _loc_scale(n, "cauchy"), lambda o, y: jss.cauchy.logpdf(y, o[0], jnp.exp(o[1]))),
        Row("Logistic", "jss.logistic.logpdf(y, loc, exp(log_scale))", mlnll.Logistic(),
            lambda n: _loc_scale(n, "logistic"), lambda o, y: jss.logistic.logpdf(y, o[0], jnp.exp(o[1]))),
        Row("StudentT(df=4)", "jss.t.logpdf(y, 4, loc, exp(log_scale))", mlnll.StudentT(df=4.0),
            lambda n: _loc_scale(n, "t"), lambda o, y: jss.t.logpdf(y, 4.0, o[0], jnp.exp(o[1]))),
        Row("LogNormal", "jss.norm.logpdf(log y, loc, exp(log_scale)) - log y", mlnll.LogNormal(),
            lambda n: (lambda o, y: (o, jnp.exp(y)))(*_loc_scale(n)), _lognormal_peer),
        Row("Exponential", "jss.expon.logpdf(y, scale=exp(-log_rate))", mlnll.Exponential(),
            lambda n: (lambda o, y: (o[0], jax.random.exponential(_keys(8, 1)[0], (n,)) * jnp.exp(-o[0])))(*_positive(n, lambda k, a, b: a)),
            lambda lr, y: jss.expon.logpdf(y, scale=jnp.exp(-lr))),
        Row("Gamma", "jss.gamma.logpdf(y, exp(log_a), scale=exp(-log_b))", mlnll.Gamma(),
            lambda n: _positive(n, lambda k, a, b: jax.random.gamma(k, jnp.exp(a)) * jnp.exp(-b) + 1e-30),
            lambda o, y: jss.gamma.logpdf(y, jnp.exp(o[0]), scale=jnp.exp(-o[1]))),
        Row("Beta", "jss.beta.logpdf(y, exp(log_a), exp(log_b))", mlnll.Beta(),
            lambda n: _positive(n, lambda k, a, b: jnp.clip(jax.random.beta(k, jnp.exp(a), jnp.exp(b)), 1e-6, 1 - 1e-6)),
            lambda o, y: jss.beta.logpdf(y, jnp.exp(o[0]), jnp.exp(o[1]))),
        Row("VonMises", "jss.vonmises.logpdf(y - loc, exp(log_kappa))", mlnll.VonMises(),
            lambda n: _positive(n, lambda k, a, b: jax.random.uniform(k, a.shape, minval=-math.pi, maxval=math.pi)),
            lambda o, y: jss.vonmises.logpdf(y - o[0], jnp.exp(o[1]))),
        Row("Multinomial(10) [N, 16]", "jss.multinomial.logpmf(y, 10, softmax(z))", mlnll.Multinomial(total_count=10),
            _multinomial_inputs(10), lambda z, y: jss.multinomial.logpmf(y.astype(jnp.int32), jnp.int32(10), jax.nn.softmax(z))),
        Row("Dirichlet [N, 16]", "vmap(jss.dirichlet.logpdf)(y, exp(log_a))", mlnll.Dirichlet(),
            _dirichlet_inputs, lambda la, y: jax.vmap(jss.dirichlet.logpdf)(y, jnp.exp(la))),
        Row("MultivariateNormal [N, 16]", "jss.multivariate_normal.logpdf(y, loc, L L^T)", mlnll.MultivariateNormal(),
            _mvn_inputs, lambda o, y: jss.multivariate_normal.logpdf(y, o[0], _tril(o[1]) @ jnp.swapaxes(_tril(o[1]), -1, -2))),
        Row("LowRankMultivariateNormal [N, 16], r=4", "jss.multivariate_normal.logpdf(y, loc, W W^T + diag(exp(l)))",
            mlnll.LowRankMultivariateNormal(), _low_rank_inputs(16, 4), _dense_low_rank_peer),
        # d = 1024: the dense peer forms, factors and solves [N, 1024, 1024]; N = size / 65536 (64 by default).
        Row("LowRankMultivariateNormal [N, 1024], r=8", "jss.multivariate_normal.logpdf(y, loc, W W^T + diag(exp(l)))",
            mlnll.LowRankMultivariateNormal(), _low_rank_inputs(1024, 8, 65536), _dense_low_rank_peer),
        Row("VonMisesFisher [N, 3]", "plain: k mu.x + log k - log(4 pi sinh k), mu = v / |v|",
            mlnll.VonMisesFisher(), _sphere_inputs, mlnll.VonMisesFisher.check_cases()[0].plain_log_prob),
        Row("OrderedLogistic [N, K=5]", "log(sigmoid(c_k - eta) - sigmoid(c_{k-1} - eta)), c by cumsum",
            mlnll.OrderedLogistic(), _ordered_inputs, mlnll.OrderedLogistic.check_cases()[0].plain_log_prob),
        Row("PlackettLuce [N, 16]", "sum(x - lax.cumlogsumexp(x, reverse=True)), x = s[ranking]",
            mlnll.PlackettLuce(), _ranking_inputs, _plackett_luce_peer),
        Row("MixtureSameFamily(Normal) [N, 8]", "logsumexp(log_softmax(logits) + jss.norm.logpdf)",
            mlnll.MixtureSameFamily(mlnll.Normal()), _mixture_inputs, _mixture_peer),
        Row("ZeroInflated(Poisson)", "where(y == 0, log(g + (1 - g) e^-rate), log(1 - g) + jss.poisson.logpmf)",
            mlnll.ZeroInflated(mlnll.Poisson()), _zero_inflated_inputs, _zip_peer),
        Row("Hurdle(Poisson)", "where(y == 0, log g, log(1 - g) + jss.poisson.logpmf - log(1 - e^-rate))",
            mlnll.Hurdle(mlnll.Poisson()), _hurdle_inputs, _hurdle_peer),
        Row("BetaBinomial(20)", "jss.betabinom.logpmf(y, 20, exp(log_a), exp(log_b))", mlnll.BetaBinomial(total_count=20),
            _beta_binomial_inputs, lambda o, y: jss.betabinom.logpmf(y, 20, jnp.exp(o[0]), jnp.exp(o[1]))),
        Row("DirichletMultinomial(10) [N, 16]", "plain: lgamma(A) - lgamma(n + A) + sum(lgamma(y + a) - lgamma(a)) + log n!/prod y!",
            mlnll.DirichletMultinomial(total_count=10), _dirichlet_multinomial_inputs, _dirichlet_multinomial_peer(10)),
        Row("Gumbel", "plain: -z - exp(-z) - log_scale, z = (y - loc) / exp(log_scale)", mlnll.Gumbel(),
            lambda n: _tail_inputs(n, mlnll.Gumbel()), _gumbel_peer),
        Row("AsymmetricLaplace(quantile=0.9)", "plain: log(tau (1 - tau)) - log_scale - u (tau - (u < 0))",
            mlnll.AsymmetricLaplace(quantile=0.9),
            lambda n: _tail_inputs(n, mlnll.AsymmetricLaplace(quantile=0.9)), _asymmetric_laplace_peer(0.9)),
        Row("Weibull", "plain: log_k - log_scale + (k - 1) log(y / scale) - (y / scale)**k", mlnll.Weibull(),
            lambda n: _tail_inputs(n, mlnll.Weibull()), _weibull_peer),
        Row("Tweedie(power=1.5)", "plain: Dunn-Smyth series, logsumexp over j = 1..200 of j z - lgamma(j + 1) - lgamma(j a)",
            mlnll.Tweedie(power=1.5), _tweedie_inputs, mlnll.Tweedie.check_cases()[0].plain_log_prob),
    ]


def table(rounds: int, size: int = 2**22, only=None) -> tuple[list[str], dict]:
    """The per-family table: mlnll ms, peer ms, ratio, compile times and spread per family."""
    lines = [
        f"### Every family, value + grad w.r.t. the raw outputs, {size:,} float32 elements",
        "",
        "Peer: the `jax.scipy.stats` (jss) log-density of the mapped parameters under `jax.grad` "
        "(or the plain formula where jss has none). Multivariate rows: [N, event] with N x event = the size.",
        "",
        "| family | peer | mlnll ms | peer ms | mlnll / peer | CPU mlnll / peer | compile s (mlnll, peer) | compile ratio | spread (mlnll, peer) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for row in rows():
        if only and row.name.split("(")[0].split(" ")[0] not in only and row.name not in only:
            continue
        outputs, targets = row.inputs(size)
        loss = mlnll.nll(row.family)
        fns = {
            "mlnll": jax.value_and_grad(lambda o, t, loss=loss: loss(o, t)),
            "peer": jax.value_and_grad(lambda o, t, f=row.peer_log_prob: -jnp.mean(f(o, t))),
        }
        s = interleaved(fns, (outputs, targets), rounds)
        m, p = s["mlnll"]["median"], s["peer"]["median"]
        cm, cp = s["mlnll"]["compile"], s["peer"]["compile"]
        summary[row.name] = {"time": m / p, "compile": cm / cp}
        lines.append(
            f"| {row.name} | {row.peer_name} | {ms(m)} | {ms(p)} | **{m / p:.2f}** "
            f"| {s['mlnll']['cpu'] / s['peer']['cpu']:.2f} | {cm:.2f}, {cp:.2f} | {cm / cp:.2f} "
            f"| {s['mlnll']['spread']:.2f}, {s['peer']['spread']:.2f} |"
        )
        print(lines[-1], flush=True)
        del outputs, targets
    return lines, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", action="append", help="a row's family name (repeatable)")
    parser.add_argument("--size", type=int, default=2**22, help="elements per call (default 4,194,304)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    table(args.rounds, args.size, args.family)
    return 0


if __name__ == "__main__":
    sys.exit(main())
