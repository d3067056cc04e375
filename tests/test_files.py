"""rnnjax._files: atomic writes, and the JSON + Markdown pair every benchmark leaves."""

import json

from rnnjax import _files


def test_write_results_writes_both_files_into_a_new_folder(tmp_path):
    folder = tmp_path / "not" / "there" / "yet"
    results = {"rows": [{"cell": "lstm", "ms": 1.5}], "meta": {"rounds": 3}}

    def markdown(r):
        return f"# Report\n\n{len(r['rows'])} row(s), {r['meta']['rounds']} rounds\n"

    text = _files.write_results(folder, "bench", results, markdown)

    assert text == "# Report\n\n1 row(s), 3 rounds\n"
    assert json.loads((folder / "bench.json").read_text()) == results
    assert (folder / "bench.md").read_text() == text
    # Only the two outputs remain: no temporary file is left behind.
    assert sorted(p.name for p in folder.iterdir()) == ["bench.json", "bench.md"]


def test_write_results_replaces_an_earlier_pair(tmp_path):
    _files.write_results(tmp_path, "bench", {"n": 1}, lambda r: "old\n")
    _files.write_results(tmp_path, "bench", {"n": 2}, lambda r: "new\n")
    assert json.loads((tmp_path / "bench.json").read_text()) == {"n": 2}
    assert (tmp_path / "bench.md").read_text() == "new\n"
