"""Training loop: one epoch end to end, loss falls, data and samplers, DDP over gloo, safe and readable outputs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
from safetensors.torch import load_file

from sifa_hub.distributed import DistContext, distributed_context
from sifa_hub.loading import resolve_source
from sifa_hub.ops import functional
from sifa_hub.train import TrainConfig, train
from sifa_hub.training_data import MotionClips, ResumableDistributedSampler, ShardSampler

# 4-frame 16 px clips keep every run to seconds on one CPU core
TINY = dict(num_frames=4, img_size=16, batch_size=8, label_smoothing=0.0, progress=False, device="cpu")


@pytest.fixture(autouse=True)
def pure_pytorch_backend(monkeypatch):
    """The SIFA op on its pure-PyTorch backend: these tests test training, not the fused kernel (no build)."""
    monkeypatch.setattr(functional, "selected_backend", lambda device="cpu": ("torch", "tests: pure PyTorch"))


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(path, "model.safetensors"))


def _modes(root: str) -> set[tuple[str, int]]:
    """``("d"|"f", permission bits)`` of everything under ``root``."""
    found = set()
    for base, dirs, files in os.walk(root):
        found |= {("d", stat.S_IMODE(os.stat(os.path.join(base, d)).st_mode)) for d in dirs}
        found |= {("f", stat.S_IMODE(os.stat(os.path.join(base, f)).st_mode)) for f in files}
    return found


def test_one_epoch_outputs_export_and_permissions(tmp_path):
    """One epoch on 16 tiny clips: metrics, metrics.json, a checkpoint and an export, all 0755/0644 under umask 022."""
    old_mask = os.umask(0o022)
    try:
        cfg = TrainConfig(
            model="sifa_resnet_pico", motion_train_samples=16, motion_val_samples=8, epochs=1, log_every=1,
            output_dir=str(tmp_path / "run"), **TINY,
        )
        metrics = train(cfg)
    finally:
        os.umask(old_mask)
    assert metrics["completed"] and len(metrics["history"]) == 1
    assert len(metrics["history"][0]["loss_curve"]) == 2  # 16 clips / batch 8, one point per step
    final = metrics["final"]
    assert 0.0 <= final["top1"] <= final["top5"] <= 100.0 and final["num_samples"] == 8
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["history"] == json.loads(json.dumps(metrics["history"]))
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert state["architecture"] == "sifa_resnet_pico" and state["classes"] == metrics["classes"]
    # the exported model reloads through timm with its class names and the trained weights
    model = timm.create_model(f"local-dir:{metrics['model_dir']}", pretrained=True)
    assert model.pretrained_cfg["label_names"] == metrics["classes"]
    trained = _weights(str(tmp_path / "run" / "checkpoints" / "step-00000002"))
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items() if k in trained)
    # every output of the run (checkpoints, metrics, the export under model/) is readable by others (umask 022)
    assert _modes(str(tmp_path / "run")) == {("d", 0o755), ("f", 0o644)}


@pytest.mark.slow
def test_smoke_loss_falls_and_outputs(tmp_path):
    cfg = TrainConfig(
        model="sifa_resnet_pico",
        motion_train_samples=64,
        motion_val_samples=16,
        epochs=3,
        lr=3e-3,
        warmup_epochs=0.5,
        log_every=1,
        output_dir=str(tmp_path / "run"),
        **TINY,
    )
    metrics = train(cfg)
    losses = [rec["train_loss"] for rec in metrics["history"]]
    assert len(losses) == 3 and metrics["completed"]
    assert losses[-1] < losses[0] - 0.2, losses
    assert len(metrics["history"][0]["loss_curve"]) == 8  # 64 clips / batch 8, one point per step
    final = metrics["final"]
    assert 0.0 <= final["top1"] <= final["top5"] <= 100.0 and final["num_samples"] == 16


def test_samplers_shard_disjointly_and_skip():
    data = list(range(23))
    shards = []
    for rank in range(2):
        sampler = ResumableDistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=3, drop_last=True)
        sampler.set_epoch(1)
        shards.append(list(sampler))
        sampler.start = 4
        assert list(sampler) == shards[-1][4:] and len(sampler) == len(shards[-1]) - 4
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 11
    eval_shards = [list(ShardSampler(23, r, 2)) for r in range(2)]
    assert sorted(eval_shards[0] + eval_shards[1]) == data  # every sample evaluated exactly once


def test_motion_clips_use_model_normalisation():
    clips = MotionClips(4, num_frames=4, size=16, seed=0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=4)
    x, label = clips[1]
    assert x.shape == (3, 4, 16, 16) and label == 1 and clips.classes == ["left", "right", "up", "down"]
    pixels = clips.videos[1].permute(3, 0, 1, 2).float() / 255
    assert torch.allclose(x, (pixels - 0.5) / 0.25)


def test_config_and_model_errors(tmp_path):
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam").validate()
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8").validate()
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0).validate()
    # --model is resolved by sifa_hub.loading (train builds through load_model)
    with pytest.raises(ValueError, match="unknown model 'resnet_nope'.*sifa_resnet_pico"):
        resolve_source("resnet_nope")
    with pytest.raises(ValueError, match="config.json"):
        resolve_source(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        resolve_source("./missing/dir")
    assert (resolve_source("org/name").kind, resolve_source("org/name").name) == ("hub", "hf-hub:org/name")
    with pytest.raises(ValueError, match="no checkpoint found"):
        train(TrainConfig(output_dir=str(tmp_path / "empty"), resume="latest", motion_train_samples=8, **TINY))
    with pytest.raises(ValueError, match="neither 'motion', a folder nor a list file"):
        train(TrainConfig(data=str(tmp_path / "nothing.txt"), output_dir=str(tmp_path / "x"), **TINY))


def test_train_on_video_files_with_multi_view_eval(tmp_path):
    """Folder (train/ + val/ splits) and list-file data decode real mp4s; eval uses 2 clips x 3 crops."""
    from sifa_hub.data import MotionDataset, write_motion_dataset

    root = tmp_path / "videos"
    write_motion_dataset(root, 16, num_frames=6, size=16, seed=1, split_name="train", classes=8)
    write_motion_dataset(root, 8, num_frames=6, size=16, seed=2, split_name="val", classes=8)
    MOTION_CLASSES = MotionDataset(1, classes=8).classes
    common = dict(epochs=1, motion_train_samples=1, eval_clips=2, eval_crops=3, **TINY)
    folder = train(TrainConfig(model="c2d_resnet_pico", data=str(root), output_dir=str(tmp_path / "f"), **common))
    assert folder["classes"] == sorted(MOTION_CLASSES)  # class sub-folders, sorted
    assert folder["final"]["num_samples"] == 8
    assert folder["history"][0]["val"]["clips_per_s"] > 0
    listed = train(
        TrainConfig(
            model="c2d_resnet_pico",
            data=str(root / "train.txt"),
            val_data=str(root / "val.txt"),
            output_dir=str(tmp_path / "l"),
            **common,
        )
    )
    assert listed["classes"] == list(MOTION_CLASSES)  # from classes.txt beside the list files
    assert listed["final"]["num_samples"] == 8


def test_dist_context_defaults():
    ctx = DistContext()
    assert not ctx.distributed and ctx.is_main
    assert ctx.all_gather({"a": 1}) == [{"a": 1}]
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(ctx.all_reduce_sum(values), values)
    with distributed_context("cpu") as single:  # one process: no group is created, none destroyed
        assert single.world_size == 1 and not single.owns_group and single.device == torch.device("cpu")


# ----------------------------------------------------------------------------------------------------------------
# DDP: 2 ranks under torchrun, gloo on CPU

_DDP_WORKER = textwrap.dedent(
    """
    import json, os, sys
    from safetensors.torch import save_file
    from sifa_hub import checkpoint, train as T, training_data
    from sifa_hub.ops import functional

    out, model_name, epochs, stop, resume, backend = sys.argv[1:7]
    if backend == "torch":
        functional.selected_backend = lambda device="cpu": ("torch", "tests: pure PyTorch")
    rank = int(os.environ["RANK"])
    seen = []
    original_iter = training_data.ResumableDistributedSampler.__iter__

    def logged_iter(self):
        indices = list(original_iter(self))
        seen.extend(indices)
        return iter(indices)

    original_save = checkpoint.save_checkpoint

    def save_and_dump(output_dir, *, model, ctx, **kwargs):
        path = original_save(output_dir, model=model, ctx=ctx, **kwargs)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(out, f"rank{ctx.rank}.safetensors"))
        return path

    training_data.ResumableDistributedSampler.__iter__ = logged_iter
    T.save_checkpoint = save_and_dump
    cfg = T.TrainConfig(
        model=model_name, num_frames=4, img_size=16, motion_train_samples=32, motion_val_samples=10,
        epochs=int(epochs), batch_size=4, label_smoothing=0.0, progress=False, device="cpu",
        output_dir=os.path.join(out, "run"), stop_after_steps=int(stop), resume=None if resume == "none" else resume,
    )
    metrics = T.train(cfg)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"seen": seen, "final": metrics["final"], "world_size": metrics["world_size"]}, f)
    """
)


def _torchrun(tmp_path, out, *args: str, backend: str = "torch", env: dict | None = None):
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    os.makedirs(out, exist_ok=True)
    run_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    proc = subprocess.run(cmd + [str(out), *args, backend], env=run_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_ddp_two_ranks_gloo(tmp_path):
    _, ranks = _torchrun(tmp_path, tmp_path, "sifa_resnet_pico", "1", "0", "none")
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 16  # each rank saw its half of the 32 clips
    assert not seen0 & seen1 and len(seen0 | seen1) == 32
    w0, w1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert ranks[0]["final"]["top1"] == ranks[1]["final"]["top1"]  # counts all-reduced over the shards
    assert ranks[0]["final"]["num_samples"] == 10
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()  # rank 0 exported
    rng = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "step-00000004").glob("rng-rank*"))
    assert rng == ["rng-rank0.json", "rng-rank0.safetensors", "rng-rank1.json", "rng-rank1.safetensors"]


def _swin_unused_parameters() -> list[str]:
    """Parameters of sifa_swin_pico that get no gradient (DDP without find_unused_parameters fails on them)."""
    model = timm.create_model("sifa_swin_pico", num_classes=4, num_frames=4, img_size=16)
    model(torch.randn(1, 3, 4, 16, 16)).sum().backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.slow
def test_ddp_swin_two_ranks_resumes_exactly(tmp_path):
    """2-rank Swin training, stopped after 3 steps and resumed, ends bitwise equal to an uninterrupted run."""
    assert _swin_unused_parameters() == []  # what made DDP fail before (issue 13)
    _, full = _torchrun(tmp_path, tmp_path / "full", "sifa_swin_pico", "2", "0", "none")
    _torchrun(tmp_path, tmp_path / "split", "sifa_swin_pico", "2", "3", "none")
    _, resumed = _torchrun(tmp_path, tmp_path / "split", "sifa_swin_pico", "2", "0", "latest")
    a = _weights(str(tmp_path / "full" / "run" / "checkpoints" / "step-00000008"))
    b = _weights(str(tmp_path / "split" / "run" / "checkpoints" / "step-00000008"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full[0]["final"]["top1"] == resumed[0]["final"]["top1"]
    w0, w1 = (load_file(str(tmp_path / "split" / f"rank{r}.safetensors")) for r in range(2))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # ranks agree


@pytest.mark.slow
def test_ddp_builds_the_fused_kernel_once(tmp_path):
    """With an empty extension cache, 2 ranks build the fused CPU kernel once (one build message in all output)."""
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    proc, ranks = _torchrun(tmp_path, tmp_path, "sifa_resnet_pico", "1", "0", "none", backend="auto", env=env)
    output = proc.stdout + proc.stderr
    assert output.lower().count("building the fused sifa cpu kernel") == 1, output[-3000:]
    assert ranks[0]["final"]["top1"] == ranks[1]["final"]["top1"]
