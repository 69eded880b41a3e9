"""SIFA module: offsets, equivalence with the operator, gradients to the offset conv, validation."""

from __future__ import annotations

import pytest
import torch

from sifa_hub.layers import SIFA, offset_input, use_sifa_backend
from sifa_hub.ops import sifa_attention


def test_zero_init_offsets_equal_non_deformable_op() -> None:
    torch.manual_seed(0)
    module = SIFA(8)
    assert module.conv_offset is not None and not module.conv_offset.weight.any()
    x = torch.randn(2, 8, 3, 5, 6)
    want = sifa_attention(x, None)
    torch.testing.assert_close(module(x), want)
    with torch.no_grad():  # inference shortcut (offset conv skipped) gives the same result
        torch.testing.assert_close(module(x), want)


def test_fixed_offsets_module_equals_op() -> None:
    module = SIFA(6, kernel_size=5, dilation=2, groups=3, learn_offsets=False, normalize="softmax")
    assert module.conv_offset is None and not module.learn_offsets
    x = torch.randn(1, 6, 2, 4, 7)
    torch.testing.assert_close(module(x), sifa_attention(x, None, 5, 2, 3, "softmax"))


def test_learned_offsets_reach_the_operator() -> None:
    torch.manual_seed(0)
    module = SIFA(4)
    torch.nn.init.normal_(module.conv_offset.weight, std=0.3)
    x = torch.randn(1, 4, 3, 6, 6)
    offsets = module.conv_offset(offset_input(x))
    assert offsets.shape == (1, 18, 2, 6, 6)
    y = module(x)
    torch.testing.assert_close(y, sifa_attention(x, offsets))
    assert not torch.allclose(y, sifa_attention(x, None))
    with torch.no_grad():
        torch.testing.assert_close(module(x), y)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_gradients_reach_conv_offset(backend: str) -> None:
    torch.manual_seed(0)
    module = SIFA(4, backend=backend)
    x = torch.randn(2, 4, 3, 5, 5, requires_grad=True)
    loss = module(x).square().sum()
    loss.backward()
    grad = module.conv_offset.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # non-zero even with zero weights
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():  # a small step: offsets of a fraction of a pixel
        module.conv_offset.weight -= 0.02 * grad / grad.abs().max()
    assert module.conv_offset.weight.any()
    module.zero_grad()
    module(x).square().sum().backward()
    assert module.conv_offset.weight.grad.abs().sum() > 0


def test_backends_agree_on_module_output_and_gradients() -> None:
    torch.manual_seed(0)
    modules = {b: SIFA(8, groups=2, backend=b) for b in ("reference", "torch", "cpu")}
    weight = torch.randn_like(modules["torch"].conv_offset.weight) * 0.2
    x = torch.randn(1, 8, 3, 5, 4, dtype=torch.float64)
    outs = {}
    for name, module in modules.items():
        module.double()
        module.conv_offset.weight.data.copy_(weight)
        xi = x.clone().requires_grad_()
        y = module(xi)
        y.square().sum().backward()
        outs[name] = (y, xi.grad, module.conv_offset.weight.grad)
    for name in ("torch", "cpu"):
        for got, want in zip(outs[name], outs["reference"]):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_single_frame_gives_zeros() -> None:
    module = SIFA(4)
    x = torch.randn(2, 4, 1, 5, 5)
    y = module(x)
    assert y.shape == x.shape and not y.any()


def test_bfloat16_autocast_module_runs() -> None:
    module = SIFA(8)
    torch.nn.init.normal_(module.conv_offset.weight, std=0.1)
    x = torch.randn(1, 8, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x)
    assert y.shape == x.shape and torch.isfinite(y.float()).all()
    torch.testing.assert_close(y.float(), module(x), rtol=5e-2, atol=5e-2)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="divisible by groups"):
        SIFA(6, groups=4)
    module = SIFA(4)
    with pytest.raises(ValueError, match="C=4"):
        module(torch.randn(1, 3, 2, 5, 5))
    with pytest.raises(ValueError, match="C=4"):
        module(torch.randn(1, 4, 5, 5))
    assert "learn_offsets=True" in repr(module)


def test_module_traces_into_one_graph_with_the_fused_op() -> None:
    module = SIFA(4)
    torch.nn.init.normal_(module.conv_offset.weight, std=0.1)
    x = torch.randn(1, 4, 3, 5, 5)
    module(x)  # eager call first: builds/loads the C++ kernel that "auto" picks while tracing
    explanation = torch._dynamo.explain(module)(x)
    assert explanation.graph_break_count == 0
    targets = [str(node.target) for graph in explanation.graphs for node in graph.graph.nodes]
    assert any("sifa_hub.cpu_forward" in t for t in targets)


@pytest.mark.parametrize("shape", [(0, 4, 3, 5, 5), (2, 4, 3, 0, 5), (2, 4, 3, 5, 0)], ids=str)
@pytest.mark.parametrize("backend", ["reference", "torch", "cpu"])
def test_empty_batch_and_maps(backend: str, shape: tuple) -> None:
    module = SIFA(4, backend=backend)
    torch.nn.init.normal_(module.conv_offset.weight, std=0.1)
    x = torch.randn(shape, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.any()
    with torch.no_grad():
        assert module(x).shape == x.shape


def test_use_sifa_backend_switches_every_module_and_restores() -> None:
    model = torch.nn.Sequential(SIFA(4, backend="cpu"), SIFA(4, backend="auto"), torch.nn.Identity())
    with use_sifa_backend(model, "torch") as same:
        assert same is model and [m.backend for m in model[:2]] == ["torch", "torch"]
    assert [m.backend for m in model[:2]] == ["cpu", "auto"]
    with pytest.raises(KeyError), use_sifa_backend(model, "reference"):
        raise KeyError("boom")
    assert [m.backend for m in model[:2]] == ["cpu", "auto"]
    with pytest.raises(ValueError, match="backend must be one of"), use_sifa_backend(model, "onnx"):
        pass
    c2d = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 1))
    with use_sifa_backend(c2d, "torch"):  # no SIFA module: nothing to switch
        assert c2d(torch.randn(1, 3, 2, 4, 4)).shape == (1, 4, 2, 4, 4)


def test_jit_trace_is_refused_with_the_alternatives() -> None:
    with pytest.raises(RuntimeError, match=r"silently wrong .* torch\.export\.export"):
        torch.jit.trace(SIFA(4), torch.randn(1, 4, 2, 5, 5))
