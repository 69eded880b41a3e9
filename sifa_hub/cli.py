"""The ``sifa-hub`` command line: train, eval, predict, demo, explain, export, push, bench.

Run ``sifa-hub <command> --help`` for each command's options and examples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]

_EPILOG = """\
examples:
  sifa-hub demo                                   # SIFA vs C2D on the embedded motion set (~5 min on 2 CPU cores)
  sifa-hub train --model sifa_resnet_pico --data motion --epochs 4
  sifa-hub train --model sifa_resnet50 --pretrained --data /data/ssv2 --amp bf16 --batch-size 8
  torchrun --nproc_per_node 8 -m sifa_hub.cli train --model sifa_resnet50 --data /data/k400
  sifa-hub eval --model sifa_demo_out/sifa_resnet_pico --data motion
  sifa-hub predict clip.mp4 --model sifa_demo_out/sifa_resnet_pico --top-k 3 --json
  sifa-hub explain clip.mp4 --model sifa_demo_out/sifa_resnet_pico --out sampling.png
"""

_TRAIN_EPILOG = """\
data (--data):
  motion         the embedded synthetic motion set (time-reversal class pairs), generated in memory
  DIR            class sub-folders of videos; DIR/train + DIR/val when present, else --val-fraction is held out
  LIST           a text file with 'relative/path.mp4 label' per line (--data-root for relative paths);
                 --val-data names the validation folder or list

outputs (--output-dir): checkpoints/step-N/ (safetensors + JSON, resumable with --resume latest),
  metrics.json (per-epoch loss, accuracy, throughput), model/ (the trained model, loadable with --model)

distributed: run the same command under torchrun, e.g. on each of 2 machines
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \\
      -m sifa_hub.cli train --model sifa_resnet50 --data /data/k400 --output-dir /shared/run
  (gloo on CPU, NCCL on GPU; --batch-size is per process; --output-dir must be on a shared filesystem)

examples:
  sifa-hub train --model sifa_resnet_pico --data motion --epochs 4 --output-dir runs/motion
  sifa-hub train --model sifa_resnet50 --pretrained --data /data/ssv2 --num-frames 16 --img-size 224 \\
      --batch-size 8 --accum-steps 4 --amp bf16 --grad-checkpointing --lr 3e-4
  sifa-hub train --model runs/motion/model --data clips.txt --data-root /videos --val-data val.txt
  sifa-hub train ... --resume latest              # continue the newest checkpoint of --output-dir
"""


def _bool_or_optional(tp: Any) -> tuple[type, bool]:
    """The scalar type of a dataclass annotation and whether ``None`` is allowed."""
    args = typing.get_args(tp)
    if args:
        inner = [a for a in args if a is not type(None)]
        return inner[0], len(inner) != len(args)
    return tp, False


def _add_dataclass_options(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    """One ``--kebab-case`` option per dataclass field, with the field's help text and default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp, optional = _bool_or_optional(hints[f.name])
        help_text = f.metadata.get("help", "") + (f" (default: {f.default})" if f.default is not None else "")
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            parser.add_argument(flag, type=tp, default=f.default, help=help_text, metavar=f.name.upper())


def _dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


# ----------------------------------------------------------------------------------------------------------------
# Commands


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    metrics = train(_dataclass_from_args(TrainConfig, args))
    if metrics.get("model_dir") and args.progress:
        final = metrics["final"]
        print(f"val top-1 {final['top1']:.2f}%  top-5 {final['top5']:.2f}%  →  model saved to {metrics['model_dir']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .predict import evaluate_model

    result = evaluate_model(
        args.model,
        args.data,
        data_root=args.data_root,
        num_clips=args.clips,
        num_crops=args.crops,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        amp=args.amp,
        motion_samples=args.motion_samples,
        seed=args.seed,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.model} on {args.data}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
            f"({result['num_samples']} videos × {args.clips * args.crops} views, {result['clips_per_s']:.1f} clips/s)"
        )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    results = predict(
        args.videos, args.model, top_k=args.top_k, num_clips=args.clips, device=args.device, amp=args.amp
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["video"])
        for rank, p in enumerate(item["predictions"], 1):
            print(f"  {rank}. {p['label']:<24} {p['score']:.4f}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain_video

    query = None
    if args.query is not None:
        try:
            row, col = (float(v) for v in args.query.split(","))
        except ValueError as e:
            raise ValueError(f"--query must be 'ROW,COL' in pixels of the model input, got {args.query!r}") from e
        query = (row, col)
    path = explain_video(
        args.video, args.model, out=args.out, block=args.block, query=query, max_frames=args.frames, device=args.device
    )
    print(path)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(_dataclass_from_args(DemoConfig, args))
    return 0


def _run_bench(which: str, argv: list[str]) -> int:
    """``sifa-hub bench op|models ARGS``: hand every remaining argument to the benchmark's own parser."""
    if which == "op":
        from .ops.bench import main as bench_main
    else:
        from .bench import main as bench_main
    return int(bench_main(argv) or 0)


def _cmd_bench(args: argparse.Namespace) -> int:
    return _run_bench(args.bench, list(args.bench_args))


# ----------------------------------------------------------------------------------------------------------------
# Parser


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, width=119)


def build_parser() -> argparse.ArgumentParser:
    """The ``sifa-hub`` argument parser with every sub-command."""
    from . import __version__
    from .demo import DemoConfig
    from .train import TrainConfig

    parser = argparse.ArgumentParser(
        prog="sifa-hub",
        description="SIFA video backbones (Long et al., CVPR 2022): train, evaluate, predict, explain, publish.",
        epilog=_EPILOG,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"sifa-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "train",
        help="fine-tune a model on videos, a list file or the motion set",
        description="Fine-tune any registered SIFA/C2D variant (single process, or DDP under torchrun).",
        epilog=_TRAIN_EPILOG,
        formatter_class=_formatter,
    )
    _add_dataclass_options(p, TrainConfig)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "eval",
        help="top-1/top-5 accuracy of a model on a dataset (multi-view)",
        description="Evaluate a model (timm name, exported directory or hf-hub id) with multi-view averaging.",
        epilog="examples:\n  sifa-hub eval --model sifa_demo_out/sifa_resnet_pico --data motion\n"
        "  sifa-hub eval --model runs/k400/model --data /data/k400/val --clips 4 --crops 3 --json",
        formatter_class=_formatter,
    )
    p.add_argument("--model", required=True, help="timm name, exported model directory, or hf-hub:ORG/NAME")
    p.add_argument("--data", required=True, help="'motion', a folder of class sub-folders, or a list file")
    p.add_argument("--data-root", default=None, help="root directory for relative paths in a list file")
    p.add_argument("--clips", type=int, default=1, help="temporal views per video (default: 1)")
    p.add_argument("--crops", type=int, default=1, choices=(1, 3), help="spatial crops per view (default: 1)")
    p.add_argument("--batch-size", type=int, default=16, help="videos per batch (default: 16)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--motion-samples", type=int, default=400, help="clips of the motion set (default: 400)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training run (motion set split; default: 0)")
    _add_device_options(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser(
        "predict",
        help="top-k labels of video files",
        description="Classify video files: uniform frame sampling over each video, centre crop, top-k softmax scores.",
        epilog="examples:\n  sifa-hub predict a.mp4 b.mp4 --model sifa_demo_out/sifa_resnet_pico\n"
        "  sifa-hub predict clip.mp4 --model hf-hub:ORG/sifa_resnet50.k400 --top-k 5 --clips 3 --json",
        formatter_class=_formatter,
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, webm, avi, ...)")
    p.add_argument("--model", required=True, help="timm name, exported model directory, or hf-hub:ORG/NAME")
    p.add_argument("--top-k", type=int, default=5, help="labels to report per video (default: 5)")
    p.add_argument("--clips", type=int, default=1, help="temporal views averaged per video (default: 1)")
    _add_device_options(p)
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser(
        "demo",
        help="SIFA vs its C2D twin on the embedded motion set (the README's first command)",
        description="Build the motion set, train a SIFA model and its C2D twin with identical settings, compare "
        "them, draw learning curves and SIFA's learned sampling positions, and export the SIFA model.",
        epilog="examples:\n  sifa-hub demo\n  sifa-hub demo --family swin --out swin_demo\n"
        "  sifa-hub demo --epochs 2 --train-samples 800   # quicker, less accurate",
        formatter_class=_formatter,
    )
    _add_dataclass_options(p, DemoConfig)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser(
        "explain",
        help="draw where SIFA samples: query points and their deformed keys in the next frame",
        description="Run a SIFA model on a video and draw consecutive frames: a query point in frame t and its K×K "
        "deformed keys in frame t+1 (learned offsets), sized by their attention weight.",
        epilog="examples:\n  sifa-hub explain clip.mp4 --model sifa_demo_out/sifa_resnet_pico\n"
        "  sifa-hub explain clip.mp4 --model DIR --block 1 --query 12,20 --out keys.png",
        formatter_class=_formatter,
    )
    p.add_argument("video", help="video file")
    p.add_argument("--model", required=True, help="a SIFA model: exported directory, timm name, or hf-hub:ORG/NAME")
    p.add_argument("--out", default="sifa_sampling.png", help="PNG to write (default: sifa_sampling.png)")
    p.add_argument("--block", type=int, default=0, help="which SIFA module, in forward order (default: 0)")
    p.add_argument(
        "--query", default=None, help="query point 'ROW,COL' in input pixels (default: strongest motion per frame)"
    )
    p.add_argument("--frames", type=int, default=6, help="consecutive frames to draw (default: 6)")
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N' (default: cpu)")
    p.set_defaults(func=_cmd_explain)

    _add_publish_parsers(sub)
    _add_bench_parser(sub)
    return parser


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast dtype (default: none)")


def _add_publish_parsers(sub: argparse._SubParsersAction) -> None:
    from . import publish

    publish.add_export_parser(sub)
    publish.add_push_parser(sub)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks: 'op' (SIFA operator backends), 'models' (SIFA vs C2D and other video models)",
        description="Benchmarks; 'sifa-hub bench op --help' and 'sifa-hub bench models --help' list their options.",
        epilog="examples:\n  sifa-hub bench op --rounds 5\n  sifa-hub bench models --quick",
        formatter_class=_formatter,
    )
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, text in (("op", "time the SIFA operator backends"), ("models", "time and size whole models")):
        b = bench_sub.add_parser(name, help=text, add_help=False)
        b.add_argument("bench_args", nargs=argparse.REMAINDER, help="options of the benchmark (see its --help)")
        b.set_defaults(func=_cmd_bench)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sifa-hub`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in ("op", "models"):
        return _run_bench(argv[1], argv[2:])  # options (--help included) belong to the benchmark's parser
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        parser.exit(2, f"sifa-hub {args.command}: error: {e}\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted\n")
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
