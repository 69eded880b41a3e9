"""Benchmarks: SIFA models against their C2D twins and published video models, the SIFA operator's backends, and
a device check (correctness + speed of the operator and the models on a GPU).

* :mod:`~sifa_hub.bench.specs`: the benchmarked models (how each is built, its role, its C2D twin);
* :mod:`~sifa_hub.bench.measure`: latency, training step, peak memory and profiled share of one model;
* :mod:`~sifa_hub.bench.runner`: a whole model benchmark run (:func:`run_models`, ``sifa-hub bench models``);
* :mod:`~sifa_hub.bench.report`: its Markdown report (``benchmarks/RESULTS.md``) and JSON;
* :mod:`~sifa_hub.bench.twins`: each SIFA model against its C2D twin in interleaved rounds (:func:`run_twins`,
  ``sifa-hub bench twins``);
* :mod:`~sifa_hub.bench.op`: the operator benchmark (:func:`run_op`, ``sifa-hub bench op``);
* :mod:`~sifa_hub.bench.gpu_check`: the device check (:func:`run_gpu_check`, ``sifa-hub bench gpu``).

FLOPs come from :mod:`sifa_hub.utils.flops`. The command-line parsers live in :mod:`sifa_hub.cli`.
"""

from .gpu_check import run_gpu_check
from .measure import ModelInfo, Result, peak_memory, profile_call, profile_sifa_share
from .op import run_op
from .report import format_report, load_run, render_models, write_report
from .runner import BenchConfig, machine_description, plan_settings, run_benchmarks, run_models
from .specs import (
    MODEL_SPECS,
    NUM_CLASSES,
    QUICK_MODELS,
    REFERENCE_MODEL,
    FrameWise,
    ModelSpec,
    Reported,
    TimeFirst,
    perturb_offset_convs,
    spec_for,
)
from .twins import TwinResult, run_twins

__all__ = [
    "MODEL_SPECS",
    "NUM_CLASSES",
    "QUICK_MODELS",
    "REFERENCE_MODEL",
    "BenchConfig",
    "FrameWise",
    "ModelInfo",
    "ModelSpec",
    "Reported",
    "Result",
    "TimeFirst",
    "TwinResult",
    "format_report",
    "load_run",
    "machine_description",
    "peak_memory",
    "perturb_offset_convs",
    "plan_settings",
    "profile_call",
    "profile_sifa_share",
    "render_models",
    "run_benchmarks",
    "run_gpu_check",
    "run_models",
    "run_op",
    "run_twins",
    "spec_for",
    "write_report",
]
