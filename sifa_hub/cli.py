"""The ``sifa-hub`` command line: train, eval, predict, demo, explain, export, push, bench, build-kernels.

Every argparse parser of the package lives here; the commands call the library with plain arguments. Run
``sifa-hub <command> --help`` for each command's options and examples.

Errors: a user error is one line on stderr, ``sifa-hub <command>: error: <what is wrong>``, and exit status 2 for
a bad command line (unknown option, bad value, unknown model name) or 1 for a failure while running (missing or
unreadable file, bad video, unsafe checkpoint, refused upload, bad model folder). Ctrl-C exits with 130. No
traceback is printed unless ``--debug`` is given or ``SIFA_HUB_DEBUG=1`` is set.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pickle
import re
import sys
import traceback
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

__all__ = ["CommandError", "UsageError", "build_parser", "main"]

DEBUG_ENV = "SIFA_HUB_DEBUG"

_EPILOG = """\
examples:
  sifa-hub demo                                   # SIFA vs C2D on the embedded motion set (~3 min on 2 CPU cores)
  sifa-hub train --model sifa_resnet_pico --data motion --epochs 4
  sifa-hub train --model sifa_resnet50 --pretrained --data /data/ssv2 --amp bf16 --batch-size 8
  torchrun --nproc_per_node 8 -m sifa_hub train --model sifa_resnet50 --data /data/k400
  sifa-hub eval --model sifa_demo_out/sifa_resnet_pico --data motion
  sifa-hub predict clip.mp4 --model sifa_demo_out/sifa_resnet_pico --top-k 3 --json
  sifa-hub explain clip.mp4 --model sifa_demo_out/sifa_resnet_pico --out sampling.png
  sifa-hub build-kernels                          # build the fused CPU kernel ahead of time (CI, images)

errors: one line on stderr; exit 2 for a bad command line, 1 for a failure while running, 130 on Ctrl-C;
  --debug (or SIFA_HUB_DEBUG=1) adds the traceback
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
      -m sifa_hub train --model sifa_resnet50 --data /data/k400 --output-dir /shared/run
  (gloo on CPU, NCCL on GPU; --batch-size is per process; --output-dir must be on a shared filesystem)

examples:
  sifa-hub train --model sifa_resnet_pico --data motion --epochs 4 --output-dir runs/motion
  sifa-hub train --model sifa_resnet50 --pretrained --data /data/ssv2 --num-frames 16 --img-size 224 \\
      --batch-size 8 --accum-steps 4 --amp bf16 --grad-checkpointing --lr 3e-4
  sifa-hub train --model runs/motion/model --data clips.txt --data-root /videos --val-data val.txt
  sifa-hub train ... --resume latest              # continue the newest checkpoint of --output-dir
"""

# ----------------------------------------------------------------------------------------------------------------
# Errors


class UsageError(Exception):
    """A bad command line (exit status 2); the message is one line, prefixed by the command's name."""


class CommandError(Exception):
    """A command that could not do what was asked (exit status 1); the message is for the user as it is."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line and an exception (``main`` prints it and exits 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


@contextlib.contextmanager
def _usage(command: str) -> Iterator[None]:
    """Turn the ``ValueError``/``TypeError`` of validating options into a :class:`UsageError` of ``command``."""
    try:
        yield
    except (ValueError, TypeError) as e:
        raise UsageError(f"sifa-hub {command}: error: {_option_names(str(e))}") from e


def _option_names(message: str) -> str:
    """``TrainConfig.batch_size must be >= 1`` → ``--batch-size must be >= 1`` (the user typed options)."""
    return re.sub(r"\b(?:TrainConfig|DemoConfig)\.(\w+)", lambda m: "--" + m[1].replace("_", "-"), message)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(error: BaseException) -> str:
    """What went wrong, for a user: the message of a known error class, else the class name and message."""
    import safetensors

    try:
        import av

        video_errors: tuple[type[BaseException], ...] = (av.error.FFmpegError,)
    except ImportError:  # pragma: no cover - av is a dependency
        video_errors = ()
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    known: tuple[type[BaseException], ...] = (CommandError, ValueError, OSError, safetensors.SafetensorError)
    known += video_errors
    if isinstance(error, known) and str(error):
        return str(error)
    unsafe = _unsafe_pickle(error)
    if unsafe is not None:
        return unsafe
    return f"{type(error).__name__}: {error} (unexpected; rerun with --debug for the traceback)"


def _unsafe_pickle(error: BaseException) -> str | None:
    """The refusal of a pickle that would run code (a ``weights_only=True`` load), anywhere in the cause chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, pickle.UnpicklingError):
            needs = re.findall(r"Unsupported global: GLOBAL (\S+)", str(current))
            what = f" (it needs {', '.join(sorted(set(needs)))})" if needs else ""
            return f"refused to load a checkpoint that would run code when unpickled{what}; only weights load"
        current = current.__cause__ or current.__context__
    return None


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes", "on")


# ----------------------------------------------------------------------------------------------------------------
# Option types (a bad value is a usage error, exit 2)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


_POSITIVE = _int_at_least(1)
_NON_NEGATIVE = _int_at_least(0)


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            items = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        return items

    return parse


def _point(text: str) -> tuple[float, float]:
    try:
        row, col = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'ROW,COL' in pixels of the model input, got {text!r}") from None
    return row, col


def _check_model(command: str, value: str) -> None:
    """An unknown variant *name* is a usage error; paths and Hub ids are checked when the command opens them."""
    looks_like_path = os.sep in value or "/" in value or value.startswith(("hf-hub:", "local-dir:", ".", "~"))
    if looks_like_path or os.path.exists(value):
        return
    from .loading import resolve_source

    with _usage(command):
        resolve_source(value)


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
        tp, _ = _bool_or_optional(hints[f.name])
        help_text = f.metadata.get("help", "") + (f" (default: {f.default})" if f.default is not None else "")
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            parser.add_argument(flag, type=tp, default=f.default, help=help_text, metavar=f.name.upper())


def _config(command: str, cls: type, args: argparse.Namespace) -> Any:
    """The dataclass ``cls`` from the parsed options, validated (a bad value is a usage error)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    with _usage(command):
        config = cls(**values)
        if hasattr(config, "validate"):
            config.validate()
    return config


# ----------------------------------------------------------------------------------------------------------------
# Commands: train, eval, predict, explain, demo


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    config = _config("train", TrainConfig, args)
    _check_model("train", config.model)
    metrics = train(config)
    if metrics.get("model_dir") and args.progress:
        final = metrics["final"]
        print(f"val top-1 {final['top1']:.2f}%  top-5 {final['top5']:.2f}%  →  model saved to {metrics['model_dir']}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_model

    _check_model("eval", args.model)
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
        for key, what in (("excluded_classes", "classes the model does not know"), ("skipped_videos", "unreadable")):
            if result.get(key):
                shown = ", ".join(map(str, result[key][:3])) + (", ..." if len(result[key]) > 3 else "")
                print(f"  left out {len(result[key])} {what}: {shown}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict

    _check_model("predict", args.model)
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

    _check_model("explain", args.model)
    path = explain_video(
        args.video,
        args.model,
        out=args.out,
        block=args.block,
        query=args.query,
        max_frames=args.frames,
        device=args.device,
    )
    print(path)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(_config("demo", DemoConfig, args))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Commands: export, push, bench, build-kernels


def _read_labels(path: str) -> list[str]:
    """Class names from a text file, one per line (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        labels = [line.strip() for line in f if line.strip()]
    if not labels:
        raise ValueError(f"{path}: no class names (expected one per line)")
    return labels


def _cmd_export(args: argparse.Namespace) -> int:
    from .publish import export_model, write_model_card

    if args.card_only and not args.repo_id:
        raise UsageError("sifa-hub export: error: --card-only needs --repo-id (the card's snippets load that repo)")
    if not (args.from_official or args.from_imagenet):
        _check_model("export", args.model)
    common: dict[str, Any] = dict(
        num_classes=args.num_classes,
        num_frames=args.num_frames,
        labels=_read_labels(args.labels) if args.labels else None,
        metrics=args.metrics,
        official_checkpoint=args.from_official,
        imagenet_checkpoint=args.from_imagenet,
        license=args.license,
        datasets=args.datasets,
        weights_description=args.weights_description,
    )
    if args.card_only:
        print(write_model_card(args.model, args.card_only, repo_id=args.repo_id, **common))
        return 0
    verify = not args.no_verify
    formats = tuple(dict.fromkeys(["safetensors", *args.formats]))  # --format onnx: model.onnx beside the weights
    print(export_model(args.model, args.out, repo_id=args.repo_id, verify=verify, formats=formats, **common))
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .publish import push_to_hub

    info = push_to_hub(
        args.dir, args.repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message
    )
    print(info.commit_url)
    return 0


def _cmd_bench_models(args: argparse.Namespace) -> int:
    if args.render:
        from .bench import render_models

        print(render_models(args.render, out=args.out))
        return 0
    from .bench import run_models

    with _usage("bench models"):
        report = run_models(
            args.models,
            quick=args.quick,
            batch_sizes=args.batch_sizes,
            dtypes=args.dtypes,
            modes=args.modes,
            repeats=args.repeats,
            train_repeats=args.train_repeats,
            train_batch_sizes=args.train_batch_sizes,
            budget=args.budget,
            frames=args.frames,
            size=args.size,
            device=args.device,
            threads=args.threads,
            profile_model=args.profile_model,
            reference=args.reference,
            out=args.out,
            json_path=args.json,
        )
    print(report)
    return 0


def _cmd_bench_op(args: argparse.Namespace) -> int:
    from .bench import run_op

    options = {k: getattr(args, k) for k in ("device", "rounds", "warmup", "threads", "clock", "batch", "frames")}
    with _usage("bench op"):
        run_op(**options, mem_batch=args.mem_batch, offset_std=args.offset_std, json_path=args.json)
    return 0


def _cmd_bench_twins(args: argparse.Namespace) -> int:
    from .bench import run_twins

    options = {k: getattr(args, k) for k in ("rounds", "instances", "warmup", "frames", "size", "device", "out")}
    with _usage("bench twins"):
        results = run_twins(
            args.models,
            batch_sizes=args.batch_sizes,
            dtypes=args.dtypes,
            threads=args.threads or None,
            json_path=args.json,
            **options,
        )
    return 0 if all(r.met is not False for r in results) else 1


def _cmd_bench_gpu(args: argparse.Namespace) -> int:
    from .bench import run_gpu_check

    with _usage("bench gpu"):
        report = run_gpu_check(args.out_dir, tiny=args.tiny, device=args.device, sections=args.sections)
    return 0 if report["passed"] else 1


def _cmd_build_kernels(args: argparse.Namespace) -> int:
    from .ops import build_kernels

    status = build_kernels()
    for backend, text in status.items():
        print(f"{backend}: {text}")
    missing = [b for b in args.require or () if not status.get(b) or status[b].startswith("unavailable")]
    if missing:
        raise CommandError(f"required kernels unavailable: {', '.join(missing)}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Parser


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=34, width=119)


def _sub(sub: Any, name: str, summary: str, description: str, examples: Sequence[str] = ()) -> argparse.ArgumentParser:
    """A sub-command parser with the shared options (``--debug``) and an ``examples:`` epilog."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    p = sub.add_parser(name, help=summary, description=description, epilog=epilog, formatter_class=_formatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    return p


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto)")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast dtype (default: none)")


_MODEL_HELP = "timm name, exported model directory, training run, or hf-hub:ORG/NAME"


def _add_train(sub: Any) -> None:
    from .train import TrainConfig

    p = sub.add_parser(
        "train",
        help="fine-tune a model on videos, a list file or the motion set",
        description="Fine-tune any registered SIFA/C2D variant (single process, or DDP under torchrun).",
        epilog=_TRAIN_EPILOG,
        formatter_class=_formatter,
    )
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    _add_dataclass_options(p, TrainConfig)
    p.set_defaults(func=_cmd_train)


def _add_eval(sub: Any) -> None:
    p = _sub(
        sub,
        "eval",
        "top-1/top-5 accuracy of a model on a dataset (multi-view)",
        "Evaluate a model (timm name, exported directory or hf-hub id) with multi-view averaging, on the classes "
        "the model was trained on.",
        (
            "sifa-hub eval --model sifa_demo_out/sifa_resnet_pico --data motion",
            "sifa-hub eval --model runs/k400/model --data /data/k400/val --clips 4 --crops 3 --json",
        ),
    )
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--data", required=True, help="'motion', a folder of class sub-folders, or a list file")
    p.add_argument("--data-root", default=None, help="root directory for relative paths in a list file")
    p.add_argument("--clips", type=_POSITIVE, default=1, help="temporal views per video (default: 1)")
    p.add_argument("--crops", type=int, default=1, choices=(1, 3), help="spatial crops per view (default: 1)")
    p.add_argument("--batch-size", type=_POSITIVE, default=16, help="videos per batch (default: 16)")
    p.add_argument("--workers", type=_NON_NEGATIVE, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--motion-samples", type=_POSITIVE, default=400, help="clips of the motion set (default: 400)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training run (motion set split; default: 0)")
    _add_device_options(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(func=_cmd_eval)


def _add_predict(sub: Any) -> None:
    p = _sub(
        sub,
        "predict",
        "top-k labels of video files",
        "Classify video files: uniform frame sampling over each video, resize and centre crop as the model was "
        "trained, top-k softmax scores.",
        (
            "sifa-hub predict a.mp4 b.mp4 --model sifa_demo_out/sifa_resnet_pico",
            "sifa-hub predict clip.mp4 --model hf-hub:ORG/sifa_resnet50.k400 --top-k 5 --clips 3 --json",
        ),
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (mp4, webm, mkv, avi, gif, ...)")
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--top-k", type=_POSITIVE, default=5, help="labels to report per video (default: 5)")
    p.add_argument("--clips", type=_POSITIVE, default=1, help="temporal views averaged per video (default: 1)")
    _add_device_options(p)
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(func=_cmd_predict)


def _add_demo(sub: Any) -> None:
    from .demo import DemoConfig

    p = _sub(
        sub,
        "demo",
        "SIFA vs its C2D twin on the embedded motion set (the README's first command)",
        "Build the motion set, train a SIFA model and its C2D twin with identical settings, compare them, draw "
        "learning curves and SIFA's learned sampling positions, and export the SIFA model.",
        (
            "sifa-hub demo",
            "sifa-hub demo --family swin --out swin_demo",
            "sifa-hub demo --epochs 2 --train-samples 800   # quicker, less accurate",
        ),
    )
    _add_dataclass_options(p, DemoConfig)
    p.set_defaults(func=_cmd_demo)


def _add_explain(sub: Any) -> None:
    p = _sub(
        sub,
        "explain",
        "draw where SIFA samples: query points and their deformed keys in the next frame",
        "Run a SIFA model on a video and draw consecutive frames: a query point in frame t and its K×K deformed "
        "keys in frame t+1 (learned offsets), sized by their attention weight.",
        (
            "sifa-hub explain clip.mp4 --model sifa_demo_out/sifa_resnet_pico",
            "sifa-hub explain clip.mp4 --model DIR --block 1 --query 12,20 --out keys.png",
        ),
    )
    p.add_argument("video", help="video file")
    p.add_argument("--model", required=True, help="a SIFA model: " + _MODEL_HELP)
    p.add_argument("--out", default="sifa_sampling.png", help="PNG to write (default: sifa_sampling.png)")
    p.add_argument("--block", type=_NON_NEGATIVE, default=0, help="which SIFA module, in forward order (default: 0)")
    p.add_argument(
        "--query", type=_point, default=None, help="query point 'ROW,COL' in input pixels (default: strongest motion)"
    )
    p.add_argument("--frames", type=_int_at_least(2), default=6, help="consecutive frames to draw (default: 6)")
    p.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'cuda:N' (default: cpu)")
    p.set_defaults(func=_cmd_explain)


def _add_export(sub: Any) -> None:
    p = _sub(
        sub,
        "export",
        "write one directory that timm, transformers and torch.hub load (weights, config, card)",
        "Write a publishable model directory: model.safetensors, config.json (timm + transformers), the video "
        "processor config, the model card and the remote-code files. A folder holding files this command did not "
        "write is never replaced.",
        (
            "sifa-hub export --model runs/pico --out exported/sifa_resnet_pico",
            "sifa-hub export --model sifa_resnet50 --from-official sifa_r50.pth --out exported/sifa_resnet50",
            "sifa-hub export --model runs/pico --card-only model_cards/sifa_resnet_pico.md --repo-id ORG/NAME",
        ),
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="NAME_OR_DIR",
        help="training run or checkpoint dir, exported dir, or an architecture name with --from-official/"
        "--from-imagenet",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="DIR", help="directory to write (replaces a previous export)")
    target.add_argument("--card-only", metavar="MD", help="write only the model card to this file")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--from-official", metavar="PTH", help="official SIFA checkpoint to convert")
    weights.add_argument("--from-imagenet", metavar="FILE", help="2D ImageNet weights to inflate")
    p.add_argument("--num-classes", type=_POSITIVE, help="classifier size (name / directory sources)")
    p.add_argument("--num-frames", type=_POSITIVE, help="clip length T (name / directory sources)")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line, in index order")
    p.add_argument("--metrics", metavar="JSON", help="measured results (sifa-hub train metrics.json or eval JSON)")
    p.add_argument("--repo-id", metavar="ORG/NAME", help="Hub repo the card's usage snippets load")
    p.add_argument("--license", default="apache-2.0", help="license id for the card (default: apache-2.0)")
    p.add_argument("--dataset", action="append", dest="datasets", metavar="HUB_ID", help="training set (repeatable)")
    p.add_argument("--weights-description", metavar="TEXT", help="how the weights were obtained (one line)")
    p.add_argument(
        "--formats",
        "--format",
        type=_csv(str),
        default=["safetensors"],
        help="comma-separated: safetensors (default), onnx (model.onnx beside it)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip reloading the export with timm")
    p.set_defaults(func=_cmd_export)


def _add_push(sub: Any) -> None:
    p = _sub(
        sub,
        "push",
        "upload an exported directory to the Hugging Face Hub (one commit)",
        "Upload a directory written by 'sifa-hub export' as one commit; the token comes from the usual places "
        "(HF_TOKEN, 'hf auth login').",
        ("sifa-hub push exported/sifa_resnet_pico --repo-id ORG/sifa_resnet_pico",),
    )
    p.add_argument("dir", metavar="DIR", help="directory written by `sifa-hub export`")
    p.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="target model repo")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if missing)")
    p.add_argument("--commit-message", metavar="M", help="commit message")
    p.set_defaults(func=_cmd_push)


def _add_bench_models(bench_sub: Any) -> None:
    m = _sub(
        bench_sub,
        "models",
        "time and size whole models",
        "SIFA models vs their C2D twins and published video models: throughput, memory, parameters, FLOPs.",
        ("sifa-hub bench models --quick", "sifa-hub bench models --out benchmarks/RESULTS.md --json run.json"),
    )
    m.add_argument("--quick", action="store_true", help="reference + R50/Swin-T twins; batch 1, fp32")
    m.add_argument("--models", type=_csv(str), help="comma-separated; default all (any timm video model works)")
    m.add_argument("--batch-sizes", type=_csv(_POSITIVE), help="comma-separated (default 1,4; --quick 1)")
    m.add_argument("--dtypes", type=_csv(str), help="fp32 and/or bf16 (autocast) (default fp32,bf16)")
    m.add_argument("--modes", type=_csv(str), default=["infer", "train"], help="infer and/or train")
    m.add_argument("--repeats", type=_POSITIVE, default=5, help="timed inference calls after warm-up (default: 5)")
    m.add_argument("--train-repeats", type=_POSITIVE, default=3, help="timed training steps (default: 3)")
    m.add_argument("--train-batch-sizes", type=_csv(_POSITIVE), help="batch sizes that train (default: all)")
    m.add_argument(
        "--no-budget", dest="budget", action="store_false", help="run every setting (default: time-budget rules)"
    )
    m.add_argument("--frames", type=_POSITIVE, default=16, help="clip length (default: 16)")
    m.add_argument("--size", type=_POSITIVE, default=224, help="frame side (default: 224)")
    m.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    m.add_argument("--threads", type=_POSITIVE, help="torch.set_num_threads (default: torch's)")
    m.add_argument("--profile-model", default="sifa_resnet50", help="model whose SIFA op share is profiled")
    m.add_argument("--reference", default="resnet50_framewise", help="model the ratios are relative to")
    m.add_argument("--out", help="Markdown report to write (e.g. benchmarks/RESULTS.md)")
    m.add_argument("--json", help="raw results as JSON")
    m.add_argument("--render", metavar="JSON", help="run nothing: format a run saved with --json (to --out)")
    m.set_defaults(func=_cmd_bench_models)


def _add_bench_op(bench_sub: Any) -> None:
    o = _sub(
        bench_sub,
        "op",
        "time the SIFA operator backends",
        "SIFA operator backends vs a naive version, a depthwise conv and a copy, at SIFA-Net R50 shapes.",
        ("sifa-hub bench op --rounds 5", "sifa-hub bench op --threads 1 --clock cpu --json op.json"),
    )
    o.add_argument("--device", default="cpu", help="cpu (C++ kernel) or cuda (Triton kernels)")
    o.add_argument("--rounds", type=_POSITIVE, default=10, help="timed rounds, interleaved across methods")
    o.add_argument("--warmup", type=_NON_NEGATIVE, default=2, help="untimed rounds first (default: 2)")
    o.add_argument("--threads", type=_NON_NEGATIVE, default=0, help="torch threads (0 = torch's default)")
    o.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time")
    o.add_argument("--batch", type=_POSITIVE, default=2, help="batch of the timings (default: 2)")
    o.add_argument("--mem-batch", type=_POSITIVE, default=16, help="batch of the memory measurement (default: 16)")
    o.add_argument("--frames", type=_int_at_least(2), default=4, help="T after the early temporal stride")
    o.add_argument("--offset-std", type=float, default=0.5, help="std of the random offsets in pixels")
    o.add_argument("--json", help="rows as JSON")
    o.set_defaults(func=_cmd_bench_op)


def _add_bench_twins(bench_sub: Any) -> None:
    t = _sub(
        bench_sub,
        "twins",
        "SIFA models vs their C2D twins, interleaved rounds, against the speed targets",
        "Inference of each SIFA model and its C2D twin timed in alternating rounds (median of paired ratios); exit 1 "
        "if a target is missed.",
        ("sifa-hub bench twins", "sifa-hub bench twins --models sifa_resnet50 --batch-sizes 1 --out RESULTS.md"),
    )
    t.add_argument(
        "--models", type=_csv(str), help="comma-separated SIFA models, each against its twin (default: R50, Swin-B)"
    )
    t.add_argument("--batch-sizes", type=_csv(_POSITIVE), default=[1, 4], help="comma-separated (default 1,4)")
    t.add_argument("--dtypes", type=_csv(str), default=["fp32", "bf16"], help="fp32 and/or bf16 (autocast)")
    t.add_argument("--rounds", type=_POSITIVE, default=3, help="timed rounds per setting and build (default: 3)")
    t.add_argument("--instances", type=_POSITIVE, default=3, help="builds of each pair, same weights (default: 3)")
    t.add_argument("--warmup", type=_NON_NEGATIVE, default=1, help="untimed rounds first (default: 1)")
    t.add_argument("--threads", type=_NON_NEGATIVE, default=1, help="torch threads (default 1; 0 = torch's default)")
    t.add_argument("--frames", type=_POSITIVE, default=16, help="clip length (default: 16)")
    t.add_argument("--size", type=_POSITIVE, default=224, help="frame side (default: 224)")
    t.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    t.add_argument("--out", help="Markdown file whose twins section is rewritten (e.g. benchmarks/RESULTS.md)")
    t.add_argument("--json", help="per-round times as JSON")
    t.set_defaults(func=_cmd_bench_twins)


def _add_bench_gpu(bench_sub: Any) -> None:
    g = _sub(
        bench_sub,
        "gpu",
        "device check: correctness of every backend, op and model speed, torch.compile",
        "One run (< 5 min on one GPU) writing gpu_check.md and gpu_check.json; exit 1 if a correctness check fails.",
        ("sifa-hub bench gpu --out-dir gpu_check", "sifa-hub bench gpu --tiny --sections correctness"),
    )
    g.add_argument("--out-dir", default="benchmarks/gpu_check", help="folder of the report")
    g.add_argument("--tiny", action="store_true", help="CPU, Triton interpreter, tiny shapes (tests the code path)")
    g.add_argument("--device", default="cuda", help="the device to check (default: cuda)")
    g.add_argument(
        "--sections",
        type=_csv(str),
        default=["correctness", "op", "models", "compile"],
        help="comma-separated subset of correctness,op,models,compile",
    )
    g.set_defaults(func=_cmd_bench_gpu)


def _add_bench(sub: Any) -> None:
    p = _sub(
        sub,
        "bench",
        "benchmarks: 'op' (operator backends), 'models' (SIFA vs C2D and others), 'gpu' (device check)",
        "Benchmarks; 'sifa-hub bench BENCH --help' lists the options of each.",
        ("sifa-hub bench op --rounds 5", "sifa-hub bench models --quick", "sifa-hub bench gpu --out-dir gpu_check"),
    )
    bench_sub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    _add_bench_models(bench_sub)
    _add_bench_op(bench_sub)
    _add_bench_twins(bench_sub)
    _add_bench_gpu(bench_sub)


def _add_build_kernels(sub: Any) -> None:
    p = _sub(
        sub,
        "build-kernels",
        "build the fused CPU kernel now (otherwise built at first use, ~40 s) and report every backend",
        "Build the compiled SIFA kernels ahead of time (one build per machine, cached) and print each backend's "
        "status.",
        ("sifa-hub build-kernels", "sifa-hub build-kernels --require cpu   # exit 1 if the CPU kernel cannot build"),
    )
    p.add_argument("--require", type=_csv(str), metavar="BACKENDS", help="exit 1 unless these are available")
    p.set_defaults(func=_cmd_build_kernels)


def build_parser() -> argparse.ArgumentParser:
    """The ``sifa-hub`` argument parser with every sub-command.

    A bad command line raises :class:`UsageError` (one line, the command's name first) instead of exiting;
    ``--help`` and ``--version`` print and exit 0 as usual. Each sub-command stores its handler as ``func``.
    """
    from . import __version__

    parser = _Parser(
        prog="sifa-hub",
        description="SIFA video backbones (Long et al., CVPR 2022): train, evaluate, predict, explain, publish.",
        epilog=_EPILOG,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"sifa-hub {__version__}")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks of errors (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_eval, _add_predict, _add_demo, _add_explain, _add_export, _add_push, _add_bench):
        add(sub)
    _add_build_kernels(sub)
    return parser


def _report(command: str, error: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(error)
    print(_one_line(f"sifa-hub {command}: error: {_describe(error)}"), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sifa-hub`` console script (and ``python -m sifa_hub``); returns the exit status.

    ``--help`` and ``--version`` print and raise ``SystemExit(0)``, as argparse does; every other outcome is the
    returned status: 0 success, 1 runtime error, 2 usage error, 130 interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    try:
        args = build_parser().parse_args(argv)
        command = args.command if args.command != "bench" else f"bench {args.bench}"
        return int(args.func(args) or 0)
    except UsageError as e:
        if debug:
            traceback.print_exception(e)
        print(_one_line(str(e)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sifa-hub {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        _report(command, e, debug)
        return 1
    finally:
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # python -m sifa_hub.cli (torchrun -m sifa_hub.cli ...) = sifa-hub
    sys.exit(main())
