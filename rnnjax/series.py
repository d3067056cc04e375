"""Time series for forecasting: Mackey-Glass and a noisy multi-seasonal signal.

Both are NumPy float64 arrays generated on the host, deterministic for given
arguments, so a forecasting benchmark sees the same data on every machine.
"""

from __future__ import annotations

import math

import numpy as np

from rnnjax import _checks


def mackey_glass_dense(
    num_points: int,
    *,
    tau: float = 17.0,
    beta: float = 0.2,
    gamma: float = 0.1,
    power: float = 10.0,
    dt: float = 0.1,
    initial: float = 1.2,
) -> np.ndarray:
    """The Mackey-Glass delay equation integrated by Euler steps of `dt`.

    .. math:: \\frac{dx}{dt} = \\beta \\frac{x(t - \\tau)}{1 + x(t - \\tau)^{n}} - \\gamma x(t)

    `x[k + 1] = x[k] + dt * (beta * x[k - d] / (1 + x[k - d] ** power) - gamma * x[k])`
    with `d = tau / dt` steps of delay and the history `x = initial` before the start.

    Returns:
      `(num_points,)` float64, `x[k] = x(k * dt)`.
    """
    num_points = _checks.positive_int("num_points", num_points)
    delay = round(tau / dt)
    if delay < 1 or not math.isclose(delay * dt, tau, rel_tol=1e-9):
        raise ValueError(f"tau must be a positive multiple of dt ({dt}), got {tau}")
    x = np.empty(num_points + delay)
    x[: delay + 1] = initial  # history on [-tau, 0]
    for k in range(delay, num_points + delay - 1):
        lagged = x[k - delay]
        x[k + 1] = x[k] + dt * (beta * lagged / (1.0 + lagged**power) - gamma * x[k])
    return x[delay:]


def mackey_glass(
    num_steps: int,
    *,
    tau: float = 17.0,
    sample_every: float = 1.0,
    discard: float = 500.0,
    dt: float = 0.1,
) -> np.ndarray:
    """The chaotic Mackey-Glass series (tau = 17), sampled every `sample_every` time units.

    The first `discard` time units (the transient from the constant history)
    are dropped. Returns `(num_steps,)` float64 values, roughly in `[0.2, 1.4]`.

    Example:
      >>> from rnnjax.series import mackey_glass
      >>> x = mackey_glass(1000)
      >>> x.shape, bool(0.2 < x.min() and x.max() < 1.5)
      ((1000,), True)
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    stride = round(sample_every / dt)
    skip = round(discard / dt)
    dense = mackey_glass_dense(skip + num_steps * stride, tau=tau, dt=dt)
    return dense[skip::stride][:num_steps]


def seasonal_series(
    num_steps: int,
    *,
    periods: tuple[float, ...] = (24.0, 168.0),
    amplitudes: tuple[float, ...] = (1.0, 0.6),
    trend: float = 0.0005,
    noise: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """A noisy signal with several seasons, like hourly demand with a day and a week.

    `x_t = sum_i a_i sin(2 pi t / p_i + phi_i) + trend * t + noise * e_t` with random
    phases `phi_i` and standard normal `e_t`, drawn from `seed`.

    Example:
      >>> from rnnjax.series import seasonal_series
      >>> seasonal_series(500).shape
      (500,)
    """
    num_steps = _checks.positive_int("num_steps", num_steps)
    if len(periods) != len(amplitudes):
        raise ValueError(
            f"amplitudes must have one entry per period ({len(periods)}), got {len(amplitudes)}"
        )
    random = np.random.default_rng(seed)
    t = np.arange(num_steps, dtype=np.float64)
    phases = random.uniform(0, 2 * np.pi, len(periods))
    signal = sum(
        a * np.sin(2 * np.pi * t / p + phi) for a, p, phi in zip(amplitudes, periods, phases)
    )
    return signal + trend * t + noise * random.standard_normal(num_steps)
