"""Runs in a subprocess with 4 simulated CPU devices (XLA_FLAGS set by the parent test).

Prints one JSON object with what the parent test asserts on.
"""

import json
import sys

import jax
import numpy as np

from rnnjax import parallel, train
from rnnjax.runs import TrainConfig, build
from rnnjax.runs import train as train_run

BASE = dict(
    task="adding",
    cell="lstm",
    length=16,
    hidden=16,
    steps=40,
    batch_size=16,
    test_size=64,
    eval_every=20,
    log_every=5,
    lr=3e-3,
)


def final_params(config):
    run = build(config)
    state, history = train.fit(
        run.state,
        run.train_step,
        run.batches,
        num_steps=config.steps,
        log_every=config.log_every,
        progress=False,
    )
    return state, history


def main():
    report = {"device_count": jax.device_count()}
    curves, params = {}, {}
    for devices in (1, 2, 4):
        state, history = final_params(TrainConfig(**BASE, devices=devices))
        curves[devices] = history["loss"]
        params[devices] = [np.asarray(leaf) for leaf in jax.tree.leaves(state.params)]
        report[f"param_sharding_{devices}"] = str(jax.tree.leaves(state.params)[0].sharding)
    report["curves"] = {str(k): v for k, v in curves.items()}
    report["max_param_difference"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(params[1], params[4])
    )
    report["max_param_magnitude"] = max(float(np.max(np.abs(a))) for a in params[1])

    # The batch inside the step is split over the 4 devices along its batch axis.
    seen = []
    run = build(TrainConfig(**BASE, devices=4))

    def loss_fn(p, batch, key):
        jax.debug.inspect_array_sharding(batch.inputs, callback=seen.append)
        return train.task_loss(run.model, run.task)(p, batch, key)

    mesh = parallel.device_mesh(4)
    step = train.make_train_step(loss_fn, run.optimizer, run.batches, mesh=mesh)
    step(run.state, run.batches.data)
    report["batch_sharding"] = str(seen[0])
    report["batch_devices"] = len(seen[0].device_set)
    report["batch_shard_shape"] = list(seen[0].shard_shape((BASE["batch_size"], BASE["length"], 2)))

    # A fixed training set, replicated, shuffled inside the step, works the same way.
    fixed = dict(BASE, train_size=64, steps=10)
    report["fixed_one"] = train_run(TrainConfig(**fixed, devices=1), None, progress=False)[
        "history"
    ]["loss"]
    report["fixed_four"] = train_run(TrainConfig(**fixed, devices=4), None, progress=False)[
        "history"
    ]["loss"]

    errors = {}
    for name, config in {
        "too_many": dict(BASE, devices=5),
        "indivisible": dict(BASE, batch_size=6, devices=4),
    }.items():
        try:
            build(TrainConfig(**config))
        except ValueError as error:
            errors[name] = str(error)
    report["errors"] = errors
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
