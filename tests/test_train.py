"""Training loop: loss falls, exact resume, DDP over gloo, evaluation metrics, safe checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sifa_hub.train import (
    DistContext,
    MotionClips,
    ResumableDistributedSampler,
    ShardSampler,
    TrainConfig,
    _flatten_optimizer,
    _unflatten_optimizer,
    evaluate,
    latest_checkpoint,
    model_source,
    train,
)

# 4-frame 16 px clips keep every run to seconds on one CPU core
TINY = dict(num_frames=4, img_size=16, batch_size=8, label_smoothing=0.0, progress=False, device="cpu")


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(path, "model.safetensors"))


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
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["history"] == json.loads(json.dumps(metrics["history"]))
    # the exported model reloads through timm with its class names and the trained weights
    import timm

    model = timm.create_model(f"local-dir:{metrics['model_dir']}", pretrained=True)
    assert model.pretrained_cfg["label_names"] == metrics["classes"]
    trained = _weights(latest_checkpoint(cfg.output_dir))
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items() if k in trained)


def test_resume_is_bit_exact(tmp_path):
    # 32 clips / batch 8 / accumulation 2 = 2 optimizer steps per epoch; dropout (0.5) consumes the RNG
    common = dict(
        model="sifa_resnet_pico", motion_train_samples=32, motion_val_samples=8, epochs=2, accum_steps=2, **TINY
    )
    full = train(TrainConfig(output_dir=str(tmp_path / "full"), **common))
    part = train(TrainConfig(output_dir=str(tmp_path / "split"), stop_after_steps=1, **common))
    assert not part["completed"] and part["history"] == []  # stopped mid-epoch 1
    state = json.loads((tmp_path / "split" / "checkpoints" / "step-00000001" / "trainer_state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"]) == (0, 1)
    resumed = train(TrainConfig(output_dir=str(tmp_path / "split"), resume="latest", **common))
    assert resumed["completed"]
    a = latest_checkpoint(str(tmp_path / "full"))
    b = latest_checkpoint(str(tmp_path / "split"))
    assert os.path.basename(a) == os.path.basename(b) == "step-00000004"
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    oa, ob = load_file(os.path.join(a, "optimizer.safetensors")), load_file(os.path.join(b, "optimizer.safetensors"))
    assert oa.keys() == ob.keys() and all(torch.equal(oa[k], ob[k]) for k in oa)
    strip = ("train_clips_per_s", "clips_per_s")

    def numbers(history: list) -> list:
        return [{k: v for k, v in rec.items() if k not in strip and k != "val"} for rec in history]

    assert numbers(full["history"]) == numbers(resumed["history"])
    assert full["final"]["top1"] == resumed["final"]["top1"]


def test_optimizer_state_roundtrip_and_no_pickle(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    tensors, meta = _flatten_optimizer(opt.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(meta)  # the rest is plain JSON
    restored = _unflatten_optimizer(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(restored)
    for p in model.parameters():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][name], opt2.state[p][name])


class _OracleModel(nn.Module):
    """Logits ``-scale · ((c - s) mod N)``: class ``s + j`` ranks j-th; ``s`` and ``scale`` are read from the clip."""

    num_classes = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, N)
        s, scale = x[:, 0, 0, 0, 0].long(), x[:, 1, 0, 0, 0]
        rank = (torch.arange(self.num_classes)[None] - s[:, None]) % self.num_classes  # (B, N)
        return -scale[:, None] * rank.float()


def test_evaluate_top1_top5_and_view_averaging():
    n = 10
    stored = torch.arange(n) % 8
    rank_of_truth = torch.tensor([0, 0, 0, 0, 0, 1, 1, 6, 4, 4])  # top-1: 5/10, top-5: 9/10
    labels = (stored + rank_of_truth) % 8
    x = torch.zeros(n, 3, 2, 4, 4)
    x[:, 0, 0, 0, 0], x[:, 1, 0, 0, 0] = stored.float(), 1.0
    metrics = evaluate(_OracleModel(), DataLoader(TensorDataset(x, labels), batch_size=4))
    assert metrics["top1"] == pytest.approx(50.0) and metrics["top5"] == pytest.approx(90.0)
    assert metrics["num_samples"] == n and metrics["clips_per_s"] > 0
    # two views per clip: a sharp one ranking `stored` first and a soft one ranking `stored + 3` first; the mean
    # of their probabilities favours `stored` (0.43 vs 0.32), the soft view alone never does
    views = torch.zeros(n, 2, 3, 2, 4, 4)
    views[:, 0, 0, 0, 0, 0], views[:, 0, 1, 0, 0, 0] = stored.float(), 2.0
    views[:, 1, 0, 0, 0, 0], views[:, 1, 1, 0, 0, 0] = ((stored + 3) % 8).float(), 1.0
    averaged = evaluate(_OracleModel(), DataLoader(TensorDataset(views, stored), batch_size=4))
    soft_only = evaluate(_OracleModel(), DataLoader(TensorDataset(views[:, 1], stored), batch_size=4))
    assert averaged["top1"] == pytest.approx(100.0) and soft_only["top1"] == pytest.approx(0.0)
    assert averaged["clips_per_s"] > 0


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
    with pytest.raises(ValueError, match="unknown model 'resnet_nope'.*sifa_resnet_pico"):
        model_source("resnet_nope")
    with pytest.raises(ValueError, match="no config.json"):
        model_source(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        model_source("./missing/dir")
    assert model_source("org/name") == ("hf-hub:org/name", True)
    with pytest.raises(ValueError, match="no checkpoint found"):
        train(TrainConfig(output_dir=str(tmp_path / "empty"), resume="latest", motion_train_samples=8, **TINY))
    with pytest.raises(ValueError, match="neither 'motion', a folder nor a list file"):
        train(TrainConfig(data=str(tmp_path / "nothing.txt"), output_dir=str(tmp_path / "x"), **TINY))


_DDP_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch.distributed as dist
    from safetensors.torch import save_file
    from sifa_hub import train as T

    out = sys.argv[1]
    seen = []
    original_iter = T.ResumableDistributedSampler.__iter__

    def logged_iter(self):
        indices = list(original_iter(self))
        seen.extend(indices)
        return iter(indices)

    original_save = T.save_checkpoint

    def save_and_dump(output_dir, *, model, ctx, **kwargs):
        path = original_save(output_dir, model=model, ctx=ctx, **kwargs)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(out, f"rank{ctx.rank}.safetensors"))
        return path

    T.ResumableDistributedSampler.__iter__ = logged_iter
    T.save_checkpoint = save_and_dump
    cfg = T.TrainConfig(
        model="sifa_resnet_pico", num_frames=4, img_size=16, motion_train_samples=32, motion_val_samples=10,
        epochs=1, batch_size=4, label_smoothing=0.0, progress=False, device="cpu", output_dir=os.path.join(out, "run"),
    )
    metrics = T.train(cfg)
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump({"seen": seen, "final": metrics["final"], "world_size": metrics["world_size"]}, f)
    dist.destroy_process_group()
    """
)


def test_ddp_two_ranks_gloo(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    proc = subprocess.run(cmd + [str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 16  # each rank saw its half of the 32 clips
    assert not seen0 & seen1 and len(seen0 | seen1) == 32
    w0, w1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert ranks[0]["final"]["top1"] == ranks[1]["final"]["top1"]  # counts all-reduced over the shards
    assert ranks[0]["final"]["num_samples"] == 10
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()  # rank 0 exported


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
