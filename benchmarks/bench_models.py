"""Model-level benchmarks of the SIFA models against their C2D twins and published video models.

A thin script over :func:`sifa_hub.bench.run_models`, with the options of ``sifa-hub bench models``::

    python benchmarks/bench_models.py --quick                      # a few minutes: twins + reference, b1 fp32
    python benchmarks/bench_models.py --out benchmarks/RESULTS.md  # the full run (< 15 min on 2 idle cores)

See ``benchmarks/RESULTS.md`` for the method and the latest results.
"""

import sys

from sifa_hub.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "models", *sys.argv[1:]]))
