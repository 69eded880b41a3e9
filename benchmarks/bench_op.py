"""Benchmark the SIFA operator's backends on the SIFA-Net R50 block shapes (see :mod:`sifa_hub.bench.op`).

A thin script over :func:`sifa_hub.bench.run_op`, with the options of ``sifa-hub bench op``::

    python benchmarks/bench_op.py [--device cuda] [--rounds 10] [--threads 2]
"""

import sys

from sifa_hub.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "op", *sys.argv[1:]]))
