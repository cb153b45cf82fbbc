"""Heteroscedastic regression with flax.nnx: the network emits a location and a log-scale for each
input, and ``mlnll.nll(mlnll.Normal())`` is the Gaussian negative log-likelihood of the targets.

    python examples/flax_nnx.py
"""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mlnll

# y = sin(3x) + noise whose standard deviation grows with |x| (from 0.05 to 0.35).
n, rng = 512, np.random.default_rng(0)
x = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
true_loc, true_scale = np.sin(3.0 * x[:, 0]), 0.05 + 0.3 * np.abs(x[:, 0])
y = true_loc + true_scale * rng.standard_normal(n, dtype=np.float32)


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(1, 32, rngs=rngs)
        self.out = nnx.Linear(32, 2, rngs=rngs)

    def __call__(self, x):
        h = self.out(jnp.tanh(self.hidden(x)))
        return h[:, 0], h[:, 1]  # (loc, log_scale), the outputs Normal() takes


loss = mlnll.nll(mlnll.Normal())
model = Net(nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)


@nnx.jit
def step(model, optimizer, x, y):
    value, grads = nnx.value_and_grad(lambda model: loss(model(x), y))(model)
    optimizer.update(model, grads)
    return value


steps, losses = 300, []
for i in range(steps):
    losses.append(float(step(model, optimizer, x, y)))
    if i % 60 == 0 or i == steps - 1:
        print(f"step {i:3d}  loss {losses[-1]:.4f}")
constant = float(loss(mlnll.mle(mlnll.Normal(), y), y))  # the best single Normal for every x
truth = float(loss((true_loc, np.log(true_scale)), y))  # the distribution the data came from
print(f"for comparison: one Normal for all x {constant:.4f}, the true model {truth:.4f}")
