"""Softmax regression with plain JAX parameters and an optax chain (gradient clipping, then Adam):
``mlnll.nll(mlnll.Categorical())`` is softmax cross-entropy with integer labels.

    python examples/optax_chain.py
"""

import jax
import jax.numpy as jnp
import optax

import mlnll

# Four classes whose logits are linear in five features; the labels are drawn from that softmax.
n, d, c = 1024, 5, 4
kx, kw, ky = jax.random.split(jax.random.key(0), 3)
x = jax.random.normal(kx, (n, d))
true_w = 1.5 * jax.random.normal(kw, (d, c))
y = jax.random.categorical(ky, x @ true_w)


def logits(params, x):
    return x @ params["w"] + params["b"]


loss = mlnll.nll(mlnll.Categorical())
optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(5e-2))
params = {"w": jnp.zeros((d, c)), "b": jnp.zeros(c)}
opt_state = optimizer.init(params)


@jax.jit
def step(params, opt_state, x, y):
    value, grads = jax.value_and_grad(lambda p: loss(logits(p, x), y))(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


steps, losses = 200, []
for i in range(steps):
    params, opt_state, value = step(params, opt_state, x, y)
    losses.append(float(value))
    if i % 40 == 0 or i == steps - 1:
        print(f"step {i:3d}  loss {losses[-1]:.4f}")
constant = float(loss(mlnll.mle(mlnll.Categorical(), y, num_classes=c), y))  # class frequencies alone
truth = float(loss(x @ true_w, y))  # the distribution the labels came from
print(f"for comparison: class frequencies alone {constant:.4f}, the true model {truth:.4f}")
