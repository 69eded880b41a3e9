"""torch.compile(fullgraph=True) of both families: eval forward and train forward + backward equal eager.

Inductor compiles a pico model for ~100 s on two busy cores, so the inductor matrix (4 models x eval/train x
fused CPU kernel / pure-PyTorch backend) runs in the slow job. The default run keeps one train forward + backward
per family through dynamo + AOTAutograd (``backend="aot_eager"``): the same graph capture, fake kernels and
autograd registration as inductor, without the C++ code generation.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch

import sifa_hub  # noqa: F401  (registers the models with timm)
from sifa_hub.layers import SIFA
from sifa_hub.ops.cpu import cpu_loaded

TOL = 1e-4
# (model, operator backend): the C2D twins hold no SIFA module, one run covers them.
CASES = [
    ("sifa_resnet_pico", "cpu"),
    ("sifa_resnet_pico", "torch"),
    ("c2d_resnet_pico", None),
    ("sifa_swin_pico", "cpu"),
    ("sifa_swin_pico", "torch"),
    ("c2d_swin_pico", None),
]


def make_model(name: str, backend: str | None) -> torch.nn.Module:
    """A pico model with non-zero learned offsets (the deformable path), no dropout or stochastic depth."""
    torch.manual_seed(0)
    kwargs: dict = {"drop_rate": 0.0} if backend is None else {"drop_rate": 0.0, "sifa_backend": backend}
    if "swin" in name:
        kwargs["drop_path_rate"] = 0.0
    model = timm.create_model(name, **kwargs)
    sifa = [m for m in model.modules() if isinstance(m, SIFA)]
    assert bool(sifa) == name.startswith("sifa_")
    for module in sifa:
        if module.conv_offset is not None:
            torch.nn.init.normal_(module.conv_offset.weight, std=0.05)
    return model


def clip() -> torch.Tensor:
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))  # (B, C, T, H, W)


def check_eval(name: str, backend: str | None, compiler: str) -> None:
    model = make_model(name, backend).eval()
    x = clip()
    compiled = torch.compile(model, fullgraph=True, backend=compiler)
    with torch.no_grad():
        want = model(x)
        got = compiled(x)
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)


def check_train(name: str, backend: str | None, compiler: str) -> None:
    eager = make_model(name, backend).train()
    twin = copy.deepcopy(eager)
    x = clip()
    compiled = torch.compile(twin, fullgraph=True, backend=compiler)
    want = eager(x)
    want.square().mean().backward()
    got = compiled(x)
    got.square().mean().backward()
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)
    pairs = list(zip(eager.named_parameters(), twin.parameters()))
    assert any(p.grad is not None for (_, p), _ in pairs)
    for (pname, p), q in pairs:
        assert (p.grad is None) == (q.grad is None), pname
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=TOL, atol=TOL, msg=lambda m, n=pname: f"{n}: {m}")
    for (bname, a), b in zip(eager.named_buffers(), twin.buffers()):  # BatchNorm running statistics
        torch.testing.assert_close(b, a, rtol=TOL, atol=TOL, msg=lambda m, n=bname: f"{n}: {m}")
    if backend == "cpu":
        assert cpu_loaded()


@pytest.mark.parametrize("name", ["sifa_resnet_pico", "sifa_swin_pico"])
def test_train_step_compiles_in_one_graph_with_the_fused_kernel(name: str) -> None:
    check_train(name, "cpu", "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), CASES, ids=lambda v: str(v))
def test_inductor_eval_forward_equals_eager(name: str, backend: str | None) -> None:
    check_eval(name, backend, "inductor")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "backend"), CASES, ids=lambda v: str(v))
def test_inductor_train_step_equals_eager(name: str, backend: str | None) -> None:
    check_train(name, backend, "inductor")
