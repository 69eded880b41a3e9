"""Device check: correctness of every SIFA backend on the GPU, operator and model speed, ``torch.compile``.

A thin script over :func:`sifa_hub.bench.run_gpu_check`, with the options of ``sifa-hub bench gpu``; one run takes
under 5 minutes on one GPU and writes ``gpu_check.md`` and ``gpu_check.json``::

    python benchmarks/gpu_check.py --out-dir benchmarks/gpu_check
    python benchmarks/gpu_check.py --tiny --out-dir /tmp/gpu_check   # CPU, Triton interpreter, tiny shapes

Exit status 1 if a check failed.
"""

import os
import sys

if __name__ == "__main__":
    if "--tiny" in sys.argv[1:]:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (importing sifa_hub does)

    from sifa_hub.cli import main

    sys.exit(main(["bench", "gpu", *sys.argv[1:]]))
