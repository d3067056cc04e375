"""The package as installed: version, typing marker, public API."""

import pathlib
import re

import rnnjax


def test_version_and_typing_marker():
    assert re.fullmatch(r"\d+\.\d+\.\d+", rnnjax.__version__)
    assert (pathlib.Path(rnnjax.__file__).parent / "py.typed").is_file()


def test_public_api_is_exported():
    missing = [name for name in rnnjax.__all__ if not hasattr(rnnjax, name)]
    assert not missing
    assert {"rnn", "lstm", "gru", "unroll", "stack", "bidirectional"} <= set(rnnjax.__all__)
