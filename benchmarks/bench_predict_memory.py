"""Peak memory of ``sifa-hub predict`` on a long video (issue 10: it must stay under 300 MB of growth).

Encodes a 60 s 640×360 H.264 clip into a temporary folder, then, in a fresh Python process, loads a model, warms
``predict`` up on a tiny clip, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and runs ``predict`` on
the long clip. The growth of the peak resident set over the warm baseline is what decoding and preprocessing cost:
the clip pipeline decodes only the frames its clips use, so it stays flat whatever the video's length (decoding
every frame of this clip would hold 1500 × 640 × 360 × 3 bytes ≈ 1 GB).

Usage::

    python benchmarks/bench_predict_memory.py [--seconds 60] [--width 640] [--height 360] [--limit-mb 300]

Prints the growth in MB and exits 1 when it exceeds the limit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, torch, timm
import sifa_hub
from sifa_hub.predict import predict

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024  # MB

long_clip, warm_clip, model_name, clips = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = timm.create_model(model_name, num_classes=4).eval()
predict(warm_clip, model, device="cpu", num_clips=clips)
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    reset = True
except OSError:
    reset = False
baseline = status("VmRSS")
result = predict(long_clip, model, device="cpu", num_clips=clips)
print(json.dumps({"baseline_mb": baseline, "peak_mb": status("VmHWM"), "peak_reset": reset,
                  "top1": result[0]["predictions"][0]}))
"""


def encode_clip(path: Path, seconds: float, width: int, height: int, fps: int) -> None:
    """A moving-gradient H.264 clip (x264 ``ultrafast``), written frame by frame (flat memory)."""
    import av
    import numpy as np

    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for t in range(int(seconds * fps)):
            image = np.broadcast_to((ramp + 3 * t) % 256, (height, width, 3)).astype(np.uint8)  # (H, W, 3)
            image[height // 3 : height // 2, (5 * t) % width : (5 * t) % width + 40] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--model", default="c2d_resnet_pico", help="any registered variant (random weights)")
    parser.add_argument("--clips", type=int, default=1, help="temporal views (predict --clips)")
    parser.add_argument("--limit-mb", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        long_clip, warm_clip = Path(tmp) / "long.mp4", Path(tmp) / "warm.mp4"
        start = time.perf_counter()
        encode_clip(long_clip, args.seconds, args.width, args.height, args.fps)
        encode_clip(warm_clip, 0.4, 64, 48, args.fps)
        print(
            f"encoded {args.seconds:g} s of {args.width}x{args.height} at {args.fps} fps "
            f"({long_clip.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s"
        )
        start = time.perf_counter()
        child = [sys.executable, "-c", CHILD, str(long_clip), str(warm_clip), args.model, str(args.clips)]
        out = subprocess.run(child, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 2
        report = json.loads(out.stdout.strip().splitlines()[-1])
    growth = report["peak_mb"] - report["baseline_mb"]
    how = "peak reset after warm-up" if report["peak_reset"] else "peak since process start (no clear_refs)"
    print(f"predict on the long clip: {time.perf_counter() - start:.1f} s in a fresh process")
    baseline = report["baseline_mb"]
    print(f"peak RSS growth: {growth:.1f} MB (baseline {baseline:.0f} MB, {how}); limit {args.limit_mb:g} MB")
    return 0 if growth < args.limit_mb else 1


if __name__ == "__main__":
    raise SystemExit(main())
