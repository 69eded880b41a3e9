"""Input validation at the timm forward of both families (issue 14): one clear message per class of bad input."""

from __future__ import annotations

import pytest
import timm
import torch

import sifa_hub  # noqa: F401  (registers the models)

PICOS = ["sifa_resnet_pico", "c2d_resnet_pico", "sifa_swin_pico", "c2d_swin_pico"]


@pytest.fixture(scope="module", params=PICOS)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(request.param, num_classes=3).eval()


def _clip(b: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, 8, 32, 32)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_clips_are_refused_with_what_to_do(model: torch.nn.Module, dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match=rf"got a {dtype} clip: convert it to float and normalise it"):
        model((_clip() * 50).clamp(0, 255).to(dtype))


def test_float_dtype_must_match_the_weights(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"got a torch.float64 clip but its weights are torch.float32.*x.to\("):
        model(_clip().double())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # under autocast the clip may stay float32
        assert model(_clip()).shape == (1, 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_named(model: torch.nn.Module, bad: float) -> None:
    x = _clip()
    x[0, 1, 3, 4, 5] = bad
    with pytest.raises(ValueError, match=r"^input clip contains NaN/Inf$"):
        model(x)
    with pytest.raises(ValueError, match="NaN/Inf"):
        model.forward_intermediates(x, intermediates_only=True)


def test_wrong_rank_channels_and_frames_are_named(model: torch.nn.Module) -> None:
    with pytest.raises(TypeError, match="expects a torch.Tensor clip"):
        model(_clip().numpy())
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"looks like \(B, T, C, H, W\)"):
        model(_clip().transpose(1, 2))
    with pytest.raises(ValueError, match="3"):
        model(torch.randn(1, 4, 8, 32, 32))
    with pytest.raises(ValueError, match="early_stride"):
        model(torch.randn(1, 3, 1 if "ResNet" in type(model).__name__ else 7, 32, 32))


def test_empty_batch_gives_empty_outputs(model: torch.nn.Module) -> None:
    with torch.no_grad():
        ref = model(_clip(2))
        out = model(_clip(0))
        maps = model.forward_intermediates(_clip(0), intermediates_only=True)
        full = model.forward_intermediates(_clip(2), intermediates_only=True)
    assert out.shape == (0, *ref.shape[1:]) and out.dtype == ref.dtype
    assert [m.shape[1:] for m in maps] == [m.shape[1:] for m in full] and all(m.shape[0] == 0 for m in maps)
