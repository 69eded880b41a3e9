"""SIFA models against their C2D twins in interleaved rounds, against the speed targets (see
:mod:`sifa_hub.bench.twins`).

A thin script over :func:`sifa_hub.bench.run_twins`, with the options of ``sifa-hub bench twins``::

    python benchmarks/bench_twins.py [--models sifa_resnet50] [--batch-sizes 1,4] [--out benchmarks/RESULTS.md]
"""

import sys

from sifa_hub.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "twins", *sys.argv[1:]]))
