"""Losses: mean squared error and softmax cross-entropy, each with an optional mask.

A mask selects which entries count (for example the steps of a padded batch,
or only the recall steps of the copy task); the loss is the mean over the
selected entries, so padding never dilutes it. optax computes the per-entry
losses underneath.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from rnnjax import _checks

Array = jax.Array


def _masked_mean(values: Array, mask: Array | None, name: str) -> Array:
    if mask is None:
        return jnp.mean(values)
    mask = jnp.asarray(mask)
    if mask.shape != values.shape:
        raise ValueError(
            f"mask must have shape {_checks.shape_str(values.shape)} (one entry per "
            f"{name}), got {_checks.shape_str(mask.shape)}"
        )
    weights = mask.astype(values.dtype)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1)


def mse(predictions: Array, targets: Array, mask: Array | None = None) -> Array:
    """Mean squared error, `mean((predictions - targets) ** 2)` over the masked entries.

    Args:
      predictions: any shape, for example `(B, O)` or `(B, T, O)`.
      targets: the same shape as `predictions`.
      mask: optional, `predictions.shape[:-1]` (one weight per output vector,
        for instance `(B, T)` for per-step outputs) or `predictions.shape`.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.losses import mse
      >>> float(mse(jnp.array([[1.0], [3.0]]), jnp.array([[0.0], [0.0]])))
      5.0
      >>> float(mse(jnp.array([[1.0], [3.0]]), jnp.zeros((2, 1)), mask=jnp.array([1, 0])))
      1.0
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"targets must have the shape of predictions {_checks.shape_str(predictions.shape)}, "
            f"got {_checks.shape_str(targets.shape)}"
        )
    errors = optax.squared_error(predictions, targets.astype(predictions.dtype))
    if mask is not None and jnp.ndim(mask) == predictions.ndim - 1:
        errors = jnp.mean(errors, axis=-1)  # one error per output vector
    return _masked_mean(errors, mask, "prediction")


def cross_entropy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Softmax cross-entropy on integer labels, in nats, averaged over the masked entries.

    Args:
      logits: `(*batch, C)` unnormalised class scores, e.g. `(B, C)` or `(B, T, C)`.
      labels: integers in `0..C-1`, shaped `logits.shape[:-1]`.
      mask: optional, shaped like `labels`.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.losses import cross_entropy
      >>> round(float(cross_entropy(jnp.zeros((3, 4)), jnp.array([0, 1, 2]))), 6)  # ln 4
      1.386294
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {_checks.shape_str(logits.shape[:-1])} (logits without "
            f"the class axis), got {_checks.shape_str(labels.shape)}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _masked_mean(losses, mask, "label")


def accuracy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Fraction of (masked) entries whose arg-max class equals the label."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
    return _masked_mean(hits, mask, "label")


def is_weight_matrix(leaf: Any) -> bool:
    """Weight matrices (rank 2 or more) are regularised; biases and scalars are not."""
    return jnp.ndim(leaf) >= 2


def l2_penalty(params: Any) -> Array:
    """`0.5 * sum(w ** 2)` over every weight matrix (arrays of rank 2 or more), biases excluded.

    Add `weight * l2_penalty(params)` to a loss for classic L2 regularisation;
    for decoupled weight decay use the `weight_decay` option of the optimizer.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.losses import l2_penalty
      >>> float(l2_penalty({"w": jnp.ones((2, 3)), "b": jnp.ones(3)}))
      3.0
    """
    weights = [leaf for leaf in jax.tree.leaves(params) if is_weight_matrix(leaf)]
    if not weights:
        return jnp.zeros(())
    return 0.5 * sum(jnp.sum(jnp.square(w)) for w in weights)
