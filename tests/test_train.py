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
    assert len(history["loss"]) == len(history["grad_norm"]) == 9  # step 1, then every 50
    assert history["stopped"] == "num_steps" and history["seconds"] > 0


@pytest.mark.slow  # compile-heavy; CI runs it
def test_train_step_compiles_once():
    *_, step, state = small_setup()
    for _ in range(3):
        state, metrics = step(state, ())
    assert step._cache_size() == 1
    assert int(state.step) == 3 and bool(metrics["finite"])


@pytest.mark.slow
def test_step_uses_the_batch_of_its_step_and_the_documented_optimizer():
    """One step by hand (batch from fold_in(key, step), optax update) equals the compiled step."""
    task, model, optimizer, batches, step, state = small_setup()
    loss_fn = train.task_loss(model, task)
    batch = batches.select((), train._batch_key(state.key, state.step), state.step)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, batch, None)[0]))(state.params)
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


def test_progress_off_a_terminal_is_plain_lines_with_loss_rate_and_a_human_eta():
    *_, batches, step, state = small_setup()
    stderr = io.StringIO()  # not a terminal: plain lines, the first at once, one at the end
    with contextlib.redirect_stderr(stderr):
        train.fit(state, step, batches, num_steps=30, log_every=10, progress=True)
    lines = stderr.getvalue().splitlines()
    assert lines[0].startswith("step 1/30 (3%)  loss ")
    assert lines[-1].startswith("step 30/30 (100%)  loss ") and "steps/s  ETA 0s" in lines[-1]
    assert "\r" not in stderr.getvalue()
    quiet = io.StringIO()
    with contextlib.redirect_stderr(quiet):
        train.fit(state, step, batches, num_steps=30, log_every=10, progress=False)
    assert quiet.getvalue() == ""


def test_durations_read_as_a_person_reads_them():
    assert [train._duration(s) for s in (0.4, 45, 725, 11220)] == ["0s", "45s", "12m05s", "3h07m"]


def numpy_batches(count, seed=0, batch_size=16, length=12):
    """A host generator of `(inputs, targets)` NumPy tuples: the sum of the first two inputs."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        xs = rng.normal(size=(batch_size, length, 1)).astype(np.float32)
        yield xs, xs[:, :2, 0].sum(axis=1, keepdims=True)


def test_fit_trains_from_an_iterator_of_host_batches():
    model = sequence_model(rnnjax.gru(8), output_size=1)
    params = model.init(jax.random.key(0), 1, jnp.float32)
    optimizer = train.make_optimizer("adam", 1e-2)

    def loss_fn(params, batch, key):
        xs, ys = batch
        return rnnjax.losses.mse(model.apply(params, xs), ys), {}

    step = train.make_train_step(loss_fn, optimizer)  # no Batches: the step takes the batch
    records = []
    state, history = train.fit(
        train.init_state(params, optimizer, jax.random.key(1)),
        step,
        numpy_batches(60),
        num_steps=60,
        log_every=20,
        progress=False,
        log=records.append,
    )
    assert int(state.step) == 60 and history["loss"][-1] < history["loss"][0]
    assert [r["step"] for r in records] == [1, 20, 40, 60]
    # The same batches give the same run; an iterator that ends stops training.
    again, _ = train.fit(
        train.init_state(params, optimizer, jax.random.key(1)),
        step,
        numpy_batches(60),
        num_steps=60,
        progress=False,
    )
    np.testing.assert_array_equal(again.params.readout.w, state.params.readout.w)
    short, history = train.fit(
        train.init_state(params, optimizer, jax.random.key(1)),
        step,
        numpy_batches(5),
        num_steps=60,
        progress=False,
    )
    assert int(short.step) == 5 and history["stopped"] == "data"
    with pytest.raises(TypeError, match="iterable of batches, got int"):
        train.fit(state, step, 3, num_steps=2, progress=False)
