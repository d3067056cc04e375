"""Character-level language models with RNN, LSTM and GRU at equal parameter count.

    python examples/text.py --quick                      # about 2 minutes on 2 CPU cores
    python examples/text.py --out examples/results/text
    python examples/text.py --text my_corpus.txt         # any text file

The default corpus exists offline on every machine: a slice of the Python standard
library's own source (the running interpreter's `.py` files in sorted order; another
Python version gives a slightly different slice). Each cell gets the hidden size that
brings its parameter count closest to the LSTM's, is trained on random windows of the
first 90% of the text and scored on fixed windows of the last 10%, in bits per
character (cross-entropy / ln 2; lower is better, log2 of the vocabulary is uniform
guessing). Samples are drawn from each model. Writes text.json, report.md and
learning_curves.png to --out.
"""

import argparse
import math
import os
import sys
import sysconfig
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax
from rnnjax import _files, losses, train
from rnnjax.models import sequence_model
from rnnjax.tasks import TaskData

CELLS = {"rnn": rnnjax.rnn, "lstm": rnnjax.lstm, "gru": rnnjax.gru}
COLOURS = {"rnn": "#d62728", "lstm": "#1f77b4", "gru": "#2ca02c"}
EMBEDDING = 32


def standard_library_text(num_chars: int) -> tuple[str, str]:
    """The first `num_chars` characters of the standard library's sorted `.py` files."""
    folder = sysconfig.get_paths()["stdlib"]
    pieces, total = [], 0
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as file:
            pieces.append(file.read())
        total += len(pieces[-1])
        if total >= num_chars:
            break
    return "".join(pieces)[:num_chars], f"Python {sys.version.split()[0]} standard library"


def count_parameters(params) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def make_model(cell_name: str, hidden: int, vocab: int):
    return sequence_model(
        CELLS[cell_name](hidden),
        output_size=vocab,
        vocab_size=vocab,
        embedding_size=EMBEDDING,
        per_step=True,
    )


def build(cell_name: str, hidden: int, vocab: int):
    model = make_model(cell_name, hidden, vocab)
    return model, model.init(jax.random.key(0), dtype=jnp.float32)


def matched_hidden(cell_name: str, budget: int, vocab: int) -> int:
    """The hidden size whose model parameter count is closest to `budget`."""

    def size(hidden: int) -> int:
        model = make_model(cell_name, hidden, vocab)
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dtype=jnp.float32))
        return count_parameters(shapes)

    low, high = 1, 4096  # the count grows with the hidden size: bisect, then compare neighbours
    while low < high:
        middle = (low + high) // 2
        if size(middle) < budget:
            low = middle + 1
        else:
            high = middle
    return min((max(low - 1, 1), low), key=lambda hidden: abs(size(hidden) - budget))


def window_batches(tokens: jax.Array, batch_size: int, length: int) -> train.Batches:
    """Random windows of `length + 1` characters: inputs and next-character targets."""

    def select(data, key, step):
        (text,) = data
        starts = jax.random.randint(
            jax.random.fold_in(key, step), (batch_size,), 0, text.shape[0] - length - 1
        )
        windows = text[starts[:, None] + jnp.arange(length + 1)[None, :]]
        return TaskData(windows[:, :-1], windows[:, 1:])

    return train.Batches((tokens,), select, batch_size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short corpus and run")
    parser.add_argument("--out", default=os.path.join("results", "text"))
    parser.add_argument("--text", help="a UTF-8 text file to model instead of the stdlib slice")
    parser.add_argument("--chars", type=int, help="characters of corpus (default 300k quick, 2M)")
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--lstm-hidden", type=int, help="sets the budget (default 128 quick, 256)")
    parser.add_argument("--steps", type=int, help="training steps (default 800 quick, 5000 full)")
    parser.add_argument("--length", type=int, default=100, help="characters per training window")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--sample-chars", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:  # the figures need matplotlib: say so before any work, not after it
        import matplotlib  # noqa: F401
    except ImportError:
        extra = 'pip install "rnnjax[bench]"'
        parser.exit(2, f"{parser.prog}: error: the figures need matplotlib: {extra}\n")
    args.chars = args.chars or (300_000 if args.quick else 2_000_000)
    args.steps = args.steps or (800 if args.quick else 5000)
    args.lstm_hidden = args.lstm_hidden or (128 if args.quick else 256)
    cells = [c for c in args.cells.split(",") if c]
    if any(c not in CELLS for c in cells):
        parser.error(f"--cells must be among {list(CELLS)}, got {args.cells!r}")
    if args.text:
        try:
            with open(args.text, encoding="utf-8") as file:
                corpus, source = file.read()[: args.chars], args.text
        except (OSError, UnicodeDecodeError) as error:
            parser.error(f"--text cannot be read: {error}")
    else:
        corpus, source = standard_library_text(args.chars)
    if len(corpus) < 20 * (args.length + 1):
        parser.error(
            f"the corpus has {len(corpus)} characters; it needs at least "
            f"{20 * (args.length + 1)} for training and validation windows"
        )
    alphabet = sorted(set(corpus))
    index = {char: i for i, char in enumerate(alphabet)}
    tokens = np.asarray([index[char] for char in corpus], dtype=np.int32)
    split = int(0.9 * len(tokens))
    train_tokens = jnp.asarray(tokens[:split])
    valid = tokens[split:]
    count = min(64, (len(valid) - 1) // (args.length + 1))
    valid_windows = valid[: count * (args.length + 1)].reshape(count, args.length + 1)
    valid_data = TaskData(jnp.asarray(valid_windows[:, :-1]), jnp.asarray(valid_windows[:, 1:]))
    vocab = len(alphabet)
    budget = count_parameters(build("lstm", args.lstm_hidden, vocab)[1])
    print(
        f"corpus: {len(corpus):,} characters of {source}, {vocab} distinct; parameter "
        f"budget {budget:,} (LSTM with {args.lstm_hidden} units)",
        file=sys.stderr,
        flush=True,
    )
    prompt_text = "def "
    prompt = jnp.asarray([[index.get(c, 0) for c in prompt_text]])
    results = {
        "corpus": {"source": source, "characters": len(corpus), "vocabulary": vocab},
        "settings": {
            k: getattr(args, k)
            for k in ("chars", "steps", "length", "batch_size", "lr", "temperature", "seed")
        },
        "parameter_budget": budget,
        "uniform_bits_per_char": math.log2(vocab),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "cells": {},
    }
    for cell_name in cells:
        hidden = matched_hidden(cell_name, budget, vocab)
        model, params = build(cell_name, hidden, vocab)
        optimizer = train.make_optimizer("adam", args.lr, clip_norm=1.0)
        batches = window_batches(train_tokens, args.batch_size, args.length)

        def loss_fn(params, batch, key, model=model):
            return losses.cross_entropy(model.apply(params, batch.inputs), batch.targets), {}

        @jax.jit
        def validate(params, data, model=model):
            return {"loss": losses.cross_entropy(model.apply(params, data.inputs), data.targets)}

        step = train.make_train_step(loss_fn, optimizer, batches)
        state = train.init_state(params, optimizer, jax.random.key(args.seed))
        started = time.perf_counter()
        state, history = train.fit(
            state,
            step,
            batches,
            num_steps=args.steps,
            eval_every=args.eval_every,
            log_every=args.eval_every,
            evaluate=lambda p, validate=validate: validate(p, valid_data),
        )
        seconds = time.perf_counter() - started
        sample = model.generate(
            state.params,
            prompt,
            num_steps=args.sample_chars,
            key=jax.random.key(args.seed),
            temperature=args.temperature,
        )
        text = prompt_text + "".join(alphabet[i] for i in np.asarray(sample[0]))
        curve = [
            {"step": e["step"], "bits_per_char": e["loss"] / math.log(2)} for e in history["eval"]
        ]
        results["cells"][cell_name] = {
            "hidden": hidden,
            "parameters": count_parameters(params),
            "valid_bits_per_char": curve[-1]["bits_per_char"],
            "curve": curve,
            "seconds": seconds,
            "sample": text,
        }
        print(
            f"  {cell_name:<4} {hidden} units, {count_parameters(params):,} parameters: "
            f"{curve[-1]['bits_per_char']:.3f} bits/char ({seconds:.0f}s)\n{text}\n",
            file=sys.stderr,
            flush=True,
        )
    command = "python examples/text.py " + " ".join(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.out, exist_ok=True)
    _files.write_json(os.path.join(args.out, "text.json"), results)
    report = render_report(results, command)
    _files.write_text(os.path.join(args.out, "report.md"), report)
    plot(results, os.path.join(args.out, "learning_curves.png"))
    print(report)
    return 0


def render_report(results: dict, command: str) -> str:
    settings = results["settings"]
    lines = [
        "# Character-level language models at equal parameter count",
        "",
        f"Command: `{command}`. Corpus: {results['corpus']['characters']:,} characters of "
        f"{results['corpus']['source']} ({results['corpus']['vocabulary']} distinct; uniform "
        f"guessing is {results['uniform_bits_per_char']:.2f} bits per character). "
        f"{settings['steps']} Adam steps (learning rate {settings['lr']}) on batches of "
        f"{settings['batch_size']} windows of {settings['length']} characters; JAX "
        f"{results['jax_version']}, {results['cpu_count']} CPU cores.",
        "",
        "| cell | hidden units | parameters | validation bits / char | training time |",
        "|---|---|---|---|---|",
    ]
    for name, cell in results["cells"].items():
        lines.append(
            f"| {name} | {cell['hidden']} | {cell['parameters']:,} | "
            f"{cell['valid_bits_per_char']:.3f} | {cell['seconds']:.0f} s |"
        )
    lines += ["", f"Samples (prompt `def `, temperature {settings['temperature']}):"]
    for name, cell in results["cells"].items():
        lines += ["", f"{name}:", "", "```", cell["sample"], "```"]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for name, cell in results["cells"].items():
        axis.plot(
            [p["step"] for p in cell["curve"]],
            [p["bits_per_char"] for p in cell["curve"]],
            color=COLOURS[name],
            linewidth=1.6,
            label=f"{name} ({cell['hidden']} units, {cell['parameters']:,} parameters)",
        )
    axis.axhline(
        results["uniform_bits_per_char"],
        color="black",
        linestyle="--",
        linewidth=1,
        label="uniform guessing",
    )
    axis.set_xlabel("training step")
    axis.set_ylabel("validation bits per character")
    axis.set_title("Character-level language model: learning curves")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=9)
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
