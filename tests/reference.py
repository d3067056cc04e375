"""Float64 NumPy references of the three cells, written straight from the equations.

They share nothing with rnnjax but the parameter NamedTuples' field names, so
agreement with them checks the maths, the gate order and the bias layout.
"""

import numpy as np


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def rnn_step(p, h, x):
    return np.tanh(x @ p.w_ih + h @ p.w_hh + p.b)


def lstm_step(p, state, x):
    h, c = state
    hidden = h.shape[-1]
    gates = x @ p.w_ih + h @ p.w_hh + p.b
    i = sigmoid(gates[..., 0 * hidden : 1 * hidden])
    f = sigmoid(gates[..., 1 * hidden : 2 * hidden])
    g = np.tanh(gates[..., 2 * hidden : 3 * hidden])
    o = sigmoid(gates[..., 3 * hidden : 4 * hidden])
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def gru_step(p, h, x):
    hidden = h.shape[-1]
    w_ir, w_iz, w_in = (p.w_ih[:, k * hidden : (k + 1) * hidden] for k in range(3))
    w_hr, w_hz, w_hn = (p.w_hh[:, k * hidden : (k + 1) * hidden] for k in range(3))
    b_r, b_z, b_n = (p.b[k * hidden : (k + 1) * hidden] for k in range(3))
    r = sigmoid(x @ w_ir + h @ w_hr + b_r)
    z = sigmoid(x @ w_iz + h @ w_hz + b_z)
    n = np.tanh(x @ w_in + b_n + r * (h @ w_hn + p.b_hn))
    return (1.0 - z) * n + z * h


def unroll(name, params, xs):
    """Runs the reference over `xs (B, T, I)` from a zero state; returns `(hs (B,T,H), final)`."""
    p = type(params)(*(np.asarray(a, np.float64) for a in params))
    xs = np.asarray(xs, np.float64)
    hidden = p.w_hh.shape[0]
    zeros = np.zeros((xs.shape[0], hidden))
    state = (zeros, zeros) if name == "lstm" else zeros
    outputs = []
    for t in range(xs.shape[1]):
        if name == "rnn":
            state = rnn_step(p, state, xs[:, t])
            h = state
        elif name == "lstm":
            state = lstm_step(p, state, xs[:, t])
            h = state[0]
        else:
            state = gru_step(p, state, xs[:, t])
            h = state
        outputs.append(h)
    return np.stack(outputs, axis=1), state


# -- the later cells, from their papers' equations -----------------------------------------


def indrnn_step(p, h, x):
    """Li et al. 2018: h' = relu(x W + u * h + b)."""
    return np.maximum(x @ p.w_ih + p.w_hh * h + p.b, 0.0)


def exprnn_step(p, h, x):
    """Lezcano-Casado & Martinez-Rubio 2019: W = expm(A - A^T), h' = modrelu(x T + h W, b)."""
    skew = p.a - p.a.T
    # expm by its eigen-decomposition: a real skew-symmetric matrix is normal.
    values, vectors = np.linalg.eig(skew)
    w = (vectors @ np.diag(np.exp(values)) @ np.linalg.inv(vectors)).real
    z = x @ p.w_ih + h @ w
    return np.sign(z) * np.maximum(np.abs(z) + p.b, 0.0)


def lru_step(p, s, x):
    """Orvieto et al. 2023: lambda = exp(-exp(nu) + i exp(theta)); s' = lambda s + gamma (x B);
    y = Re(s' C) + x D. `s` is complex here."""
    lam = np.exp(-np.exp(p.nu_log) + 1j * np.exp(p.theta_log))
    gamma = np.exp(p.gamma_log)
    b = p.b_re + 1j * p.b_im
    c = p.c_re + 1j * p.c_im
    s = lam * s + gamma * (x @ b)
    return s, (s @ c).real + x @ p.d


def g(v):
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def min_gru_step(p, h, x):
    """Feng et al. 2024: z = sigmoid(x W_z + b_z), h~ = g(x W_h + b_h), h' = (1-z) h + z h~."""
    hidden = h.shape[-1]
    pre = x @ p.w_ih + p.b
    z, candidate = sigmoid(pre[..., :hidden]), g(pre[..., hidden:])
    return (1 - z) * h + z * candidate


def min_lstm_step(p, h, x):
    """Feng et al. 2024: f, i gates of x, normalised to f/(f+i), i/(f+i); h' = f' h + i' h~."""
    hidden = h.shape[-1]
    pre = x @ p.w_ih + p.b
    f = sigmoid(pre[..., :hidden])
    i = sigmoid(pre[..., hidden : 2 * hidden])
    candidate = g(pre[..., 2 * hidden :])
    return f / (f + i) * h + i / (f + i) * candidate
