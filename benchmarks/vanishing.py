"""The vanishing-gradient study, the main job of rnnjax.

    python benchmarks/vanishing.py --quick                           # a few minutes on 2 CPU cores
    python benchmarks/vanishing.py --out benchmarks/results/study --resume   # the full study

Trains the vanilla RNN, the LSTM (three initialisations of its forget gate), the GRU
and the later cells (IndRNN, expRNN, LRU, minGRU, minLSTM) on the adding, copy-memory
and recall-first tasks over a range of sequence lengths, several runs at once
(--jobs), and writes to --out: results.json (every run, every measurement), runs.csv
(one row per run), report.md (criteria, tables, captions) and the figures
grad_norms, grad_heatmap, learning_curves and success_vs_length, each as PNG and SVG.
`--help` lists the options; the same study is `rnnjax bench vanishing`.
"""

import sys

from rnnjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "vanishing", *sys.argv[1:]]))
