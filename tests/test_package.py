"""The package as installed: version, typing marker, public API, and the README's examples."""

import contextlib
import io
import pathlib
import re

import jax

import rnnjax

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_version_and_typing_marker():
    assert re.fullmatch(r"\d+\.\d+\.\d+", rnnjax.__version__)
    assert (pathlib.Path(rnnjax.__file__).parent / "py.typed").is_file()


def test_public_api_is_exported():
    missing = [name for name in rnnjax.__all__ if not hasattr(rnnjax, name)]
    assert not missing
    assert {"rnn", "lstm", "gru", "unroll", "stack", "bidirectional"} <= set(rnnjax.__all__)


def test_readme_python_examples_run_and_print_what_they_say():
    """Every ```python block of the README runs, in order, in one namespace."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks
    namespace: dict = {}
    output = io.StringIO()
    with jax.numpy_rank_promotion("allow"), contextlib.redirect_stdout(output):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    printed = output.getvalue()
    # The seed reproduction prints the notebook's own numbers.
    assert "Predicted output: [[0.00190613]]" in printed
    assert "Loss: 5475.717895768589" in printed
