"""MkDocs hook: serve the committed benchmark figures beside the pages.

The figures live with the outputs that made them (`benchmarks/results/`,
`examples/results/`), stated once; this hook adds every PNG and SVG there to the
site under `results/` and `example-results/`, so the pages link them without a copy
in `docs/`.
"""

from __future__ import annotations

import pathlib

from mkdocs.structure.files import File, Files

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = {
    "results": ROOT / "benchmarks" / "results",
    "example-results": ROOT / "examples" / "results",
}


def on_files(files: Files, config) -> Files:
    for prefix, folder in SOURCES.items():
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".png", ".svg"):
                uri = f"{prefix}/{path.relative_to(folder).as_posix()}"
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
