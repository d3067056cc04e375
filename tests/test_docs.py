"""Every code block of the README and of the documentation pages runs.

Python blocks run in order, one namespace per page, and what they print is checked
where a page states it. Shell blocks are checked without running them: every
`rnnjax ...` and `python benchmarks/vanishing.py ...` command in them parses with the
command's own argument parser, so no documented flag can drift away from the CLI.
"""

import contextlib
import io
import pathlib
import re
import shlex

import jax
import pytest

from rnnjax import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(page: pathlib.Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


def run_python(page: pathlib.Path) -> str:
    output = io.StringIO()
    namespace: dict = {}
    with jax.numpy_rank_promotion("allow"), contextlib.redirect_stdout(output):
        for block in blocks(page, "python"):
            exec(compile(block, str(page.relative_to(ROOT)), "exec"), namespace)
    return output.getvalue()


PYTHON_PAGES = [p for p in PAGES if blocks(p, "python")]


@pytest.mark.slow
@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[p.name for p in PYTHON_PAGES])
def test_python_blocks_run(page):
    printed = run_python(page)
    # Where a block prints, the page shows what it prints in a comment on that line.
    for block in blocks(page, "python"):
        for line in block.splitlines():
            match = re.match(r"\s*print\(.*\)\s*#\s*(.+)$", line)
            if match:
                assert match.group(1).strip() in printed, (page.name, line)


@pytest.mark.slow
def test_the_seed_page_prints_the_notebooks_numbers():
    printed = run_python(ROOT / "docs" / "seed.md")
    assert "Predicted output: [[0.00190613]]" in printed
    assert "Loss: 5475.717895768589" in printed


def shell_commands(page: pathlib.Path) -> list[list[str]]:
    """The `rnnjax` and `python benchmarks/vanishing.py` commands of a page's shell
    blocks, as argument lists (lines with shell variables or loops left out)."""
    commands = []
    for block in blocks(page, "bash"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if not words or any("$" in w for w in words):
                    continue
                if words[0] == "rnnjax":
                    commands.append(words[1:])
                elif words[:2] == ["python", "benchmarks/vanishing.py"]:
                    commands.append(["bench", "vanishing", *words[2:]])
    return commands


SHELL = [(p, c) for p in PAGES for c in shell_commands(p)]


@pytest.mark.parametrize(
    ("page", "command"), SHELL, ids=[f"{p.name}:{' '.join(c)[:40]}" for p, c in SHELL]
)
def test_shell_commands_parse(page, command):
    cli._build_parser().parse_args(command)


def test_every_page_is_in_the_site_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}" in config, page.name
