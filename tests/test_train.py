"""Training: optimizers, the compiled step, batches, `fit`, the non-finite guard."""

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import checkpoint, train
from rnnjax.models import sequence_model
from rnnjax.tasks import TaskData, get_task


def small_setup(cell=None, steps_task="adding", length=20, batch_size=16):
    task = get_task(steps_task)
    model = sequence_model(cell or rnnjax.gru(16), output_size=task.output_size)
    params = model.init(jax.random.key(0), task.input_size)
    optimizer = train.make_optimizer("adam", 1e-2, clip_norm=1.0)
    batches = train.sampled_batches(task, batch_size, length)
    step = train.make_train_step(train.task_loss(model, task), optimizer, batches)
    state = train.init_state(params, optimizer, jax.random.key(1))
    return task, model, optimizer, batches, step, state


@pytest.mark.slow
def test_training_beats_the_adding_baseline():
    task, model, _, batches, step, state = small_setup()
    evaluate = train.make_evaluate(model, task, task.generate(jax.random.key(7), 500, 20))
    before = float(evaluate(state.params)["loss"])
    state, history = train.fit(
        state, step, batches, num_steps=400, evaluate=evaluate, eval_every=100, progress=False
    )
    after = history["eval"][-1]["loss"]
    assert before > 0.1 and after < 0.02, (before, after)  # baseline 1/6
    assert history["step"][-1] == 400 and int(state.step) == 400
    assert len(history["loss"]) == len(history["grad_norm"]) == 8  # a read every 50 steps
    assert history["stopped"] == "num_steps" and history["seconds"] > 0


def test_train_step_compiles_once():
    *_, step, state = small_setup()
    for _ in range(3):
        state, metrics = step(state, ())
    assert step._cache_size() == 1
    assert int(state.step) == 3 and bool(metrics["finite"])


def test_step_uses_the_batch_of_its_step_and_the_documented_optimizer():
    """One step by hand (batch from fold_in(key, step), optax update) equals the compiled step."""
    task, model, optimizer, batches, step, state = small_setup()
    loss_fn = train.task_loss(model, task)
    batch = batches.select((), train._batch_key(state.key, state.step), state.step)
    grads = jax.grad(lambda p: loss_fn(p, batch, None)[0])(state.params)
    updates, _ = optimizer.update(grads, state.opt_state, state.params)
    expected = optax.apply_updates(state.params, updates)
    new_state, metrics = step(state, ())
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15),
        new_state.params,
        expected,
    )
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree_utils.tree_norm(grads), rtol=1e-12)


@pytest.mark.parametrize("name", train.OPTIMIZERS)
def test_optimizers_by_name_with_weight_decay_on_matrices_only(name):
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    optimizer = train.make_optimizer(name, 0.1, clip_norm=None, weight_decay=0.5)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zero_grads, optimizer.init(params), params)
    assert float(jnp.abs(updates["b"]).max()) == 0.0  # biases never decay
    assert float(updates["w"].max()) < 0.0  # weights shrink


def test_clipping_bounds_the_update():
    params = {"w": jnp.zeros((3, 3))}
    optimizer = train.make_optimizer("sgd", 1.0, clip_norm=0.5)
    updates, _ = optimizer.update({"w": jnp.full((3, 3), 10.0)}, optimizer.init(params), params)
    assert float(optax.tree_utils.tree_norm(updates)) == pytest.approx(0.5)


def test_schedule_as_learning_rate():
    schedule = optax.linear_schedule(1.0, 0.0, 10)
    optimizer = train.make_optimizer("sgd", schedule, clip_norm=None)
    params = {"w": jnp.zeros(())}
    state = optimizer.init(params)
    first, state = optimizer.update({"w": jnp.ones(())}, state, params)
    second, state = optimizer.update({"w": jnp.ones(())}, state, params)
    assert float(first["w"]) == pytest.approx(-1.0) and float(second["w"]) == pytest.approx(-0.9)


def test_optimizer_errors():
    with pytest.raises(ValueError, match=r"optimizer must be one of .* got 'adagrad'"):
        train.make_optimizer("adagrad")
    with pytest.raises(ValueError, match="learning_rate must be positive"):
        train.make_optimizer("adam", -1.0)
    with pytest.raises(ValueError, match=r"weight_decay must be >= 0, got -0\.1"):
        train.make_optimizer("adam", weight_decay=-0.1)


def test_shuffled_batches_visit_every_sequence_once_per_epoch():
    data = TaskData(jnp.arange(10.0)[:, None, None], jnp.arange(10.0)[:, None])
    batches = train.shuffled_batches(data, batch_size=3)  # 3 batches an epoch, 1 dropped
    key = jax.random.key(0)
    seen = [batches.select(batches.data, key, jnp.asarray(s)).targets[:, 0] for s in range(6)]
    for epoch in (seen[:3], seen[3:]):
        values = np.concatenate(epoch)
        assert len(set(values.tolist())) == 9  # no repeats within an epoch
    assert not np.array_equal(np.concatenate(seen[:3]), np.concatenate(seen[3:]))  # reshuffled
    again = train.iterate(batches, key, start=4)
    np.testing.assert_array_equal(next(again).targets[:, 0], seen[4])
    with pytest.raises(ValueError, match="batch_size must be at most the number of sequences"):
        train.shuffled_batches(data, batch_size=11)


def _nan_after(step_index, batches):
    """The same batches, but with NaN inputs from step `step_index` on."""

    def select(data, key, step):
        batch = batches.select(data, key, step)
        poisoned = jnp.where(step >= step_index, jnp.nan, batch.inputs)
        return batch._replace(inputs=poisoned)

    return train.Batches(batches.data, select, batches.batch_size)


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    task, model, optimizer, batches, _, state = small_setup()
    poisoned = _nan_after(5, batches)
    step = train.make_train_step(train.task_loss(model, task), optimizer, poisoned)
    path = tmp_path / "checkpoint.npz"
    saved = []

    def save(state):
        saved.append(jax.tree.map(np.asarray, state.params))
        return checkpoint.save(path, state)

    with pytest.raises(
        train.NonFiniteError,
        match=r"at step 6 .* Last good checkpoint: .*checkpoint.npz \(step 4\)",
    ):
        train.fit(
            state,
            step,
            poisoned,
            num_steps=20,
            log_every=2,
            save=save,
            save_every=2,
            progress=False,
        )
    restored = checkpoint.load(path, state)
    assert int(restored.step) == 4
    jax.tree.map(np.testing.assert_array_equal, restored.params, saved[-1])
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored.params))


def test_target_loss_and_callback_stop_early():
    task, model, _, batches, step, state = small_setup()
    evaluate = train.make_evaluate(model, task, task.generate(jax.random.key(7), 200, 20))
    _, history = train.fit(
        state,
        step,
        batches,
        num_steps=1000,
        evaluate=evaluate,
        eval_every=20,
        target_loss=10.0,
        progress=False,
    )
    assert history["stopped"] == "target" and history["eval"][-1]["step"] == 20
    calls = []
    _, history = train.fit(
        state,
        step,
        batches,
        num_steps=1000,
        evaluate=evaluate,
        eval_every=10,
        callback=lambda s, h: calls.append(int(s.step)) or len(calls) == 3,
        progress=False,
    )
    assert calls == [10, 20, 30] and history["stopped"] == "callback"


def test_progress_line_shows_loss_throughput_and_eta():
    *_, batches, step, state = small_setup()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        train.fit(state, step, batches, num_steps=30, log_every=10, progress=True)
    text = stderr.getvalue()
    assert "step 30/30" in text and "loss" in text and "seq/s" in text and "ETA" in text
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet):
        train.fit(state, step, batches, num_steps=30, log_every=10, progress=False)
    assert quiet.getvalue() == ""
