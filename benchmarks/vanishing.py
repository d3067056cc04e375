"""The vanishing-gradient study, the main job of rnnjax.

    python benchmarks/vanishing.py --quick                 # a few minutes on 2 CPU cores
    python benchmarks/vanishing.py --out benchmarks/results/vanishing   # the full study

Trains vanilla RNN, LSTM (three initialisations) and GRU on the adding, copy-memory
and recall-first tasks over a range of sequence lengths, and writes to --out:
results.json (every run, every measurement), report.md (tables) and the figures
grad_norms.png, grad_heatmap.png, learning_curves.png and success_vs_length.png.
`--help` lists the options; the same study is `rnnjax bench vanishing`.
"""

import sys

from rnnjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "vanishing", *sys.argv[1:]]))
