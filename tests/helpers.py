"""Small builders shared by the test modules."""

import jax
import jax.numpy as jnp

import rnnjax

CELL_NAMES = ("rnn", "lstm", "gru")
CONSTRUCTORS = {
    "rnn": rnnjax.rnn,
    "lstm": rnnjax.lstm,
    "gru": rnnjax.gru,
    # The GRU with its fused kernel in place of its default tuned scan.
    "gru-kernel": lambda h: rnnjax.gru(h)._replace(sequence=rnnjax.fused.gru_kernel_sequence()),
}
# Every built-in fast path: the cells' defaults and the GRU's kernel.
FAST_PATHS = (*CELL_NAMES, "gru-kernel")
KERNELS = ("rnn", "lstm", "gru-kernel")


def make_cell(name, hidden_size=5):
    return CONSTRUCTORS[name](hidden_size)


def random_params(cell, key, input_size, dtype=jnp.float64, scale=0.5):
    """`cell.init` plus noise on every array, so zero biases hide no layout bug."""
    key_init, key_noise = jax.random.split(key)
    params = cell.init(key_init, input_size, dtype)
    leaves, treedef = jax.tree.flatten(params)
    noise_keys = jax.random.split(key_noise, len(leaves))
    noisy = [
        leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
        for leaf, k in zip(leaves, noise_keys)
    ]
    return jax.tree.unflatten(treedef, noisy)


def random_inputs(key, shape, dtype=jnp.float64):
    return jax.random.normal(key, shape, dtype)
