"""Losses against hand-computed values, with and without masks."""

import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import losses


def test_mse_plain_and_masked():
    predictions = jnp.array([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 1.0], [2.0, 2.0]]])  # (B=2, T=2, O=2)
    targets = jnp.zeros_like(predictions)
    assert float(losses.mse(predictions, targets)) == pytest.approx((1 + 4 + 9 + 1 + 4 + 4) / 8)
    step_mask = jnp.array([[1, 0], [1, 0]])  # only the first step of each sequence counts
    assert float(losses.mse(predictions, targets, step_mask)) == pytest.approx((2.5 + 5.0) / 2)
    entry_mask = jnp.zeros_like(predictions).at[1, 1, 0].set(1)
    assert float(losses.mse(predictions, targets, entry_mask)) == pytest.approx(4.0)


def test_cross_entropy_and_accuracy():
    logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    labels = jnp.array([0, 1])
    want = -(np.log(0.7) + np.log(0.1)) / 2
    assert float(losses.cross_entropy(logits, labels)) == pytest.approx(want, rel=1e-6)
    assert float(losses.cross_entropy(logits, labels, jnp.array([0, 1]))) == pytest.approx(
        -np.log(0.1), rel=1e-6
    )
    assert float(losses.accuracy(logits, labels)) == 0.5
    assert float(losses.accuracy(logits, labels, jnp.array([True, False]))) == 1.0


def test_empty_mask_gives_zero_not_nan():
    assert float(losses.mse(jnp.ones((2, 1)), jnp.zeros((2, 1)), jnp.zeros(2))) == 0.0


def test_l2_penalty_counts_matrices_only():
    params = {"w": jnp.full((2, 2), 2.0), "b": jnp.full((3,), 5.0)}
    assert float(losses.l2_penalty(params)) == pytest.approx(0.5 * 4 * 4.0)


def test_loss_errors():
    with pytest.raises(ValueError, match=r"targets must have the shape of predictions \(2, 1\)"):
        losses.mse(jnp.ones((2, 1)), jnp.ones((2,)))
    with pytest.raises(ValueError, match=r"mask must have shape \(2,\)"):
        losses.cross_entropy(jnp.ones((2, 3)), jnp.array([0, 1]), jnp.ones(3))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        losses.cross_entropy(jnp.ones((2, 3)), jnp.array([[0], [1]]))
    with pytest.raises(TypeError, match="labels must be integers, got dtype float"):
        losses.cross_entropy(jnp.ones((2, 3)), jnp.array([0.0, 1.0]))
