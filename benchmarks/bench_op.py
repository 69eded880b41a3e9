"""Benchmark the SIFA operator's backends on the SIFA-Net R50 block shapes (see :mod:`sifa_hub.ops.bench`).

Usage: ``python benchmarks/bench_op.py [--device cuda] [--rounds 10] [--threads 2]``.
"""

import sys

from sifa_hub.ops.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
