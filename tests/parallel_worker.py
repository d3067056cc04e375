"""Runs in a subprocess with 4 simulated CPU devices (XLA_FLAGS set by the parent test).

Prints one JSON object with what the parent test asserts on.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import parallel, train
from rnnjax.models import sequence_model
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
    report["split_unroll"] = split_unroll_checks()
    json.dump(report, sys.stdout)


def _max_difference(a, b):
    """The largest absolute difference between two pytrees of arrays."""
    return max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def split_unroll_checks():
    """`unroll` under a 4-device mesh against no mesh, in float64: outputs and gradients."""
    jax.config.update("jax_enable_x64", True)
    mesh = parallel.device_mesh(4)
    options = {
        "default": {},
        "fused": {"fused": True},
        "checkpointed": {"checkpoint_every": 6},
        "reverse_lengths": {"reverse": True, "lengths": jnp.array([20, 5, 13, 1] * 2)},
    }
    result = {"max_difference": {}, "split": {}, "collectives_in_loops": {}}
    for name in ("rnn", "lstm", "gru"):
        cell = getattr(rnnjax, name)(8)
        params = cell.init(jax.random.key(0), 3, dtype=jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (8, 20, 3), dtype=jnp.float64)
        for option, kwargs in options.items():

            def loss(params, xs, cell=cell, kwargs=kwargs):
                hs, final = rnnjax.unroll(cell, params, xs, **kwargs)
                return jnp.sum(jnp.sin(hs)) + jnp.sum(jax.tree.leaves(final)[0] ** 2)

            grad = jax.value_and_grad(loss, argnums=(0, 1))
            alone = jax.jit(grad)(params, xs)
            with jax.set_mesh(mesh):
                lowered = jax.jit(grad).lower(params, xs)
                compiled = lowered.compile()  # compiled once: run and inspected
                split = compiled(params, xs)
            key = f"{name}/{option}"
            result["max_difference"][key] = _max_difference(alone, split)
            result["split"][key] = "manual_computation" in lowered.as_text()
            result["collectives_in_loops"][key] = parallel.collectives_in_loops(compiled.as_text())

    # Forward mode and Hessian-vector products through the split, both paths.
    cell = rnnjax.gru(5)
    params = cell.init(jax.random.key(0), 3, dtype=jnp.float64)
    xs = jax.random.normal(jax.random.key(1), (8, 7, 3), dtype=jnp.float64)
    tangent = jax.tree.map(jnp.ones_like, params)
    for fused in (False, True):

        def cubed(params, fused=fused):
            return jnp.sum(rnnjax.unroll(cell, params, xs, fused=fused)[0] ** 3)

        def hvp(params, tangent, cubed=cubed):
            return jax.jvp(jax.grad(cubed), (params,), (tangent,))

        alone = jax.jit(hvp)(params, tangent)
        with jax.set_mesh(mesh):
            split = jax.jit(hvp)(params, tangent)
        key = f"gru hessian-vector product, fused={fused}"
        result["max_difference"][key] = _max_difference(alone, split)

    # Eagerly (no jit) and under vmap, the split gives the same outputs.
    alone = rnnjax.unroll(cell, params, xs)[0]
    batches = xs.reshape(2, 4, 7, 3)
    with jax.set_mesh(mesh):
        eager = rnnjax.unroll(cell, params, xs)[0]
        mapped = jax.vmap(lambda x: rnnjax.unroll(cell, params, x)[0])(batches)
    result["max_difference"]["gru eager"] = float(jnp.max(jnp.abs(eager - alone)))
    result["max_difference"]["gru vmap"] = float(
        jnp.max(jnp.abs(mapped.reshape(alone.shape) - alone))
    )

    # A model with variational dropout: its per-sequence masks split with the batch.
    model = sequence_model(
        rnnjax.gru(8), output_size=2, num_layers=2, input_dropout=0.3, state_dropout=0.2
    )
    model_params = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(jax.random.key(2), 3))
    xs = jax.random.normal(jax.random.key(3), (8, 12, 3), dtype=jnp.float64)

    def model_loss(params):
        outputs = model.apply(params, xs, key=jax.random.key(4), train=True)
        return jnp.sum(outputs**2)

    alone = jax.jit(jax.value_and_grad(model_loss))(model_params)
    with jax.set_mesh(mesh):
        split = jax.jit(jax.value_and_grad(model_loss))(model_params)
    result["max_difference"]["gru model, variational dropout"] = _max_difference(alone, split)

    cell = rnnjax.lstm(8)
    params = cell.init(jax.random.key(0), 3, dtype=jnp.float64)
    with jax.set_mesh(mesh):
        hs, _ = jax.jit(lambda p, x: rnnjax.unroll(cell, p, x))(params, jnp.ones((8, 5, 3)))
        result["output_devices"] = len(hs.sharding.device_set)
        # 6 sequences do not divide over 4 devices: the same computation, unsplit.
        outputs = jax.jit(lambda p, x: rnnjax.unroll(cell, p, x)[0])
        uneven = outputs.lower(params, jnp.ones((6, 5, 3)))
        result["uneven_split"] = "manual_computation" in uneven.as_text()
    jax.config.update("jax_enable_x64", False)
    return result


if __name__ == "__main__":
    main()
