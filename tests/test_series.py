"""Time series: Mackey-Glass obeys its delay equation; the seasonal series has its seasons."""

import numpy as np
import pytest

from rnnjax.series import mackey_glass, mackey_glass_dense, seasonal_series


def test_mackey_glass_obeys_its_discretised_delay_equation_exactly():
    dt, tau, beta, gamma, power = 0.1, 17.0, 0.2, 0.1, 10.0
    x = mackey_glass_dense(6000, tau=tau, dt=dt)
    delay = 170
    k = np.arange(delay, len(x) - 1)
    rhs = beta * x[k - delay] / (1 + x[k - delay] ** power) - gamma * x[k]
    np.testing.assert_allclose(x[k + 1], x[k] + dt * rhs, rtol=1e-15, atol=0)


def test_mackey_glass_approximates_the_continuous_equation():
    """A finer dt changes the trajectory by O(dt) over a short window (chaos amplifies later)."""
    coarse = mackey_glass_dense(400, dt=0.1)  # 40 time units
    fine = mackey_glass_dense(4000, dt=0.01)[::10]
    assert np.max(np.abs(coarse - fine)) < 0.02


def test_mackey_glass_is_chaotic_and_bounded():
    x = mackey_glass(3000)
    assert x.min() > 0.2 and x.max() < 1.5
    assert x.std() > 0.15  # not settled to a fixed point or a small cycle
    np.testing.assert_array_equal(x, mackey_glass(3000))
    dense = mackey_glass_dense(round(500 / 0.1) + 3000 * 10)
    np.testing.assert_array_equal(x, dense[5000::10][:3000])


def test_seasonal_series_has_its_periods():
    x = seasonal_series(24 * 7 * 8, noise=0.0, trend=0.0)
    spectrum = np.abs(np.fft.rfft(x))
    frequencies = np.fft.rfftfreq(len(x))
    top_two = sorted(1 / frequencies[np.argsort(spectrum)[-2:]])
    np.testing.assert_allclose(top_two, [24.0, 168.0], rtol=1e-6)
    noisy = seasonal_series(2000, seed=1)
    assert not np.array_equal(noisy, seasonal_series(2000, seed=2))


def test_series_errors():
    with pytest.raises(ValueError, match="tau must be a positive multiple of dt"):
        mackey_glass_dense(10, tau=17.05, dt=0.1)
    with pytest.raises(ValueError, match="amplitudes must have one entry per period"):
        seasonal_series(10, periods=(24.0,), amplitudes=(1.0, 2.0))
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        mackey_glass(0)
