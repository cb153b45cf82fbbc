"""Poisson regression of counts with an equinox MLP: the network emits a log-rate for each input, and
``mlnll.nll(mlnll.Poisson())`` is the Poisson negative log-likelihood of the observed counts.

    python examples/equinox_model.py
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import mlnll

# Counts whose rate moves from about 0.4 to 7 with x: log_rate = 0.5 + 1.5 sin(3x).
n, rng = 512, np.random.default_rng(0)
x = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
true_log_rate = 0.5 + 1.5 * np.sin(3.0 * x[:, 0])
y = rng.poisson(np.exp(true_log_rate)).astype(np.float32)

model = eqx.nn.MLP(in_size=1, out_size="scalar", width_size=32, depth=1, activation=jnp.tanh,
                   key=jax.random.key(0))
loss = mlnll.nll(mlnll.Poisson())
optimizer = optax.adam(1e-2)
opt_state = optimizer.init(eqx.filter(model, eqx.is_array))


def objective(model, x, y):
    return loss(jax.vmap(model)(x), y)  # one log-rate per example


@eqx.filter_jit
def step(model, opt_state, x, y):
    value, grads = eqx.filter_value_and_grad(objective)(model, x, y)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), opt_state, value


steps, losses = 300, []
for i in range(steps):
    model, opt_state, value = step(model, opt_state, x, y)
    losses.append(float(value))
    if i % 60 == 0 or i == steps - 1:
        print(f"step {i:3d}  loss {losses[-1]:.4f}")
constant = float(loss(mlnll.mle(mlnll.Poisson(), y), y))  # the best single rate for every x
truth = float(loss(true_log_rate, y))  # the distribution the data came from
print(f"for comparison: one rate for all x {constant:.4f}, the true model {truth:.4f}")
