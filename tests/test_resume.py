"""Resuming (issue 14): exact continuation, refused config changes, another architecture, checkpoint fallback."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sifa_hub.checkpoint import (
    flatten_optimizer_state,
    is_complete_checkpoint,
    latest_checkpoint,
    unflatten_optimizer_state,
)
from sifa_hub.loading import load_model
from sifa_hub.ops import functional
from sifa_hub.train import RESUME_MAY_CHANGE, TrainConfig, check_resume_config, train

TINY = dict(num_frames=4, img_size=16, batch_size=8, label_smoothing=0.0, progress=False, device="cpu")
# 16 clips / batch 8 = 2 optimizer steps per epoch
SHORT = dict(model="sifa_resnet_pico", motion_train_samples=16, motion_val_samples=8, epochs=2, **TINY)


@pytest.fixture(autouse=True)
def pure_pytorch_backend(monkeypatch):
    """The SIFA op on its pure-PyTorch backend: these tests test resuming, not the fused kernel (no build)."""
    monkeypatch.setattr(functional, "selected_backend", lambda device="cpu": ("torch", "tests: pure PyTorch"))


def _weights(path: str) -> dict[str, torch.Tensor]:
    return load_file(os.path.join(path, "model.safetensors"))


def _stopped_run(tmp_path, steps: int = 1, **overrides) -> str:
    out = str(tmp_path / "run")
    part = train(TrainConfig(output_dir=out, stop_after_steps=steps, **dict(SHORT, **overrides)))
    assert not part["completed"]
    return out


def test_resume_is_bit_exact(tmp_path):
    # 16 clips / batch 4 / accumulation 2 = 2 optimizer steps per epoch; dropout (0.5) consumes the RNG
    common = dict(
        model="sifa_resnet_pico", motion_train_samples=16, motion_val_samples=4, epochs=2, accum_steps=2,
        **dict(TINY, batch_size=4),
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


def test_resume_refuses_a_changed_batch_size(tmp_path):
    out = _stopped_run(tmp_path)
    with pytest.raises(ValueError, match=r"--batch-size was 8 in that run, now 4") as err:
        train(TrainConfig(output_dir=out, resume="latest", **dict(SHORT, batch_size=4)))
    assert "step-00000001" in str(err.value) and "--progress" in str(err.value)  # names the checkpoint and the list
    with pytest.raises(ValueError, match=r"--lr was 0.001 in that run, now 0.002"):
        train(TrainConfig(output_dir=out, resume="latest", lr=2e-3, **SHORT))


def test_resume_accepts_fields_of_the_may_change_list(tmp_path):
    out = _stopped_run(tmp_path)
    resumed = train(
        TrainConfig(output_dir=out, resume="latest", log_every=1, keep_checkpoints=3, eval_every=2, **SHORT)
    )
    assert resumed["completed"] and resumed["history"][-1]["global_step"] == 4
    assert {"log_every", "keep_checkpoints", "eval_every", "output_dir", "device"} <= RESUME_MAY_CHANGE


def test_check_resume_config_names_absent_fields():
    saved = {k: v for k, v in TrainConfig().__dict__.items() if k != "seed"}
    with pytest.raises(ValueError, match=r"--seed was absent in that run, now 0"):
        check_resume_config(saved, TrainConfig(), "ckpt")
    check_resume_config(dict(TrainConfig().__dict__, progress=False, workers=3), TrainConfig(), "ckpt")


def test_resume_into_another_architecture_is_one_clear_error(tmp_path):
    out = _stopped_run(tmp_path)
    with pytest.raises(ValueError, match=r"holds a sifa_resnet_pico model, but --model c2d_resnet_pico builds "
                       r"c2d_resnet_pico"):
        train(TrainConfig(output_dir=out, resume="latest", **dict(SHORT, model="c2d_resnet_pico")))


def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    out = _stopped_run(tmp_path, steps=3, keep_checkpoints=3, save_every_steps=1)
    root = os.path.join(out, "checkpoints")
    assert sorted(d for d in os.listdir(root) if d.startswith("step-")) == [
        "step-00000001",
        "step-00000002",
        "step-00000003",
    ]
    assert latest_checkpoint(out) == os.path.join(root, "step-00000003")
    shutil.rmtree(os.path.join(root, "step-00000003"))  # latest.json now names a deleted folder
    assert latest_checkpoint(out) == os.path.join(root, "step-00000002")
    os.remove(os.path.join(root, "step-00000002", "optimizer.safetensors"))  # and the next one is partial
    assert not is_complete_checkpoint(os.path.join(root, "step-00000002"))
    assert latest_checkpoint(out) == os.path.join(root, "step-00000001")
    with open(os.path.join(root, "latest.json"), "w") as f:
        f.write("{not json")
    assert latest_checkpoint(out) == os.path.join(root, "step-00000001")
    # resuming from there runs to the end, and loading the run folder finds the new newest checkpoint
    resumed = train(TrainConfig(output_dir=out, resume="latest", keep_checkpoints=3, save_every_steps=1, **SHORT))
    assert resumed["completed"] and resumed["history"][-1]["global_step"] == 4
    assert latest_checkpoint(out) == os.path.join(root, "step-00000004")
    loaded = load_model(out)
    assert loaded.kind == "training-checkpoint" and loaded.labels == resumed["classes"]


def test_optimizer_state_roundtrip_and_no_pickle(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    json.dumps(meta)  # the rest is plain JSON
    restored = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(restored)
    for p in model.parameters():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][name], opt2.state[p][name])
