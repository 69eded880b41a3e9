"""SIFA operator: every backend against the reference, gradients, dtypes, input validation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
import torch

from sifa_hub.ops import available_backends, selected_backend, sifa_attention, sifa_attention_reference
from sifa_hub.ops.cpu import sifa_attention_cpu
from sifa_hub.ops.torch_backend import sifa_attention_torch

FAST_BACKENDS = ["torch", "cpu"]

# (B, C, T, H, W, K, dilation, groups, offsets): offsets "frac" random non-integer, "int" integral sample points,
# "large" mostly outside the frame, "none" offsets=None, "frac_t" given for all T frames.
CASES = [
    (1, 4, 2, 5, 5, 3, 1, 1, "frac"),
    (2, 6, 3, 4, 7, 3, 1, 2, "frac"),
    (1, 4, 3, 6, 3, 5, 1, 1, "int"),
    (2, 3, 2, 4, 4, 1, 1, 1, "frac"),
    (1, 4, 4, 5, 6, 3, 2, 1, "large"),
    (1, 8, 2, 3, 5, 3, 1, 4, "none"),
    (2, 4, 3, 4, 5, 3, 1, 1, "frac_t"),
    (1, 4, 2, 1, 6, 3, 1, 1, "frac"),
]


def make_inputs(case: tuple, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple:
    b, c, t, h, w, k, _, _, kind = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, t, h, w, generator=gen, dtype=dtype)
    frames = t if kind == "frac_t" else t - 1
    shape = (b, 2 * k * k, frames, h, w)
    if kind == "none":
        off = None
    elif kind == "int":
        off = torch.randint(-2, 3, shape, generator=gen).to(dtype)
    elif kind == "large":
        off = torch.randn(shape, generator=gen, dtype=dtype) * 6
    else:
        off = torch.randn(shape, generator=gen, dtype=dtype) * 1.5
    return x, off


def run_reference(x: torch.Tensor, off: torch.Tensor | None, case: tuple, normalize: str | None) -> torch.Tensor:
    b, _, t, h, w, k, d, g, _ = case
    if off is None:
        off = x.new_zeros(b, 2 * k * k, t - 1, h, w)
    return sifa_attention_reference(x, off, k, d, g, normalize)


@pytest.mark.parametrize("normalize", [None, "softmax"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference_forward_backward(backend: str, case: tuple, normalize: str | None) -> None:
    _, _, _, _, _, k, d, g, _ = case
    x, off = make_inputs(case)
    x.requires_grad_()
    if off is not None:
        off.requires_grad_()
    inputs = [x] if off is None else [x, off]
    y_ref = run_reference(x, off, case, normalize)
    y = sifa_attention(x, off, k, d, g, normalize, backend=backend)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(y)
    grads_ref = torch.autograd.grad(y_ref, inputs, grad_out)
    grads = torch.autograd.grad(y, inputs, grad_out)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_float32_close_to_float64_reference(backend: str) -> None:
    case = (2, 16, 3, 7, 9, 3, 1, 2, "frac")
    x, off = make_inputs(case)
    y_ref = run_reference(x, off, case, None)
    y = sifa_attention(x.float(), off.float(), 3, 1, 2, backend=backend)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalize", [None, "softmax"])
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_gradcheck(backend: str, normalize: str | None) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    # Non-integer sample points away from the bilinear kinks: fractional parts in [0.2, 0.8].
    frac = 0.2 + 0.6 * torch.rand(1, 18, 1, 3, 3, generator=gen, dtype=torch.float64)
    off = (torch.randint(-2, 2, frac.shape, generator=gen).double() + frac).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: sifa_attention(a, b, 3, 1, 2, normalize, backend=backend),
        (x, off),
        eps=1e-6,
        atol=1e-6,
        fast_mode=True,
    )


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_single_frame_is_zero(backend: str) -> None:
    x = torch.randn(2, 4, 1, 5, 5, requires_grad=True)
    off = torch.randn(2, 18, 1, 5, 5)
    y = sifa_attention(x, off, backend=backend)
    assert y.shape == x.shape and not y.any()
    (x.sum() + y.sum()).backward()  # y may be a constant; the sum keeps backward well-defined
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_deterministic(backend: str) -> None:
    case = (2, 8, 4, 6, 6, 3, 1, 1, "frac")
    x, off = make_inputs(case, torch.float32)
    outs = []
    for _ in range(2):
        xi, oi = x.clone().requires_grad_(), off.clone().requires_grad_()
        y = sifa_attention(xi, oi, backend=backend)
        y.square().sum().backward()
        outs.append((y, xi.grad, oi.grad))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_cpu_kernel_is_bitwise_thread_count_invariant() -> None:
    # Tall maps so the backward's scatter runs in several row bands; a few offsets far outside the frame.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 3, 40, 12, generator=gen, requires_grad=True)
    off = torch.randn(2, 18, 2, 40, 12, generator=gen) * 1.5
    off[0, 4, 0, :3] = 1e9
    off.requires_grad_()
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            x.grad = off.grad = None
            y = sifa_attention(x, off, backend="cpu")
            y.square().sum().backward()
            results.append((y.detach(), x.grad, off.grad))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)
    want = sifa_attention(x.detach().double(), off.detach().double(), backend="reference")
    torch.testing.assert_close(results[0][0].double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["auto", *FAST_BACKENDS])
def test_bfloat16_autocast_runs(backend: str) -> None:
    x = torch.randn(1, 8, 3, 5, 5)
    conv = torch.nn.Conv3d(8, 18, (1, 3, 3), padding=(0, 1, 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = conv(x)[:, :8]  # bf16 under autocast
        offs = conv(x)[:, :, 1:] * 0.1
        y = sifa_attention(feats, offs, backend=backend)
    assert y.dtype == torch.bfloat16 and y.shape == feats.shape
    want = sifa_attention(feats.float(), offs.float(), backend="reference")
    torch.testing.assert_close(y.float(), want, rtol=2e-2, atol=2e-2)
    y.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


EMPTY_SHAPES = [(0, 4, 3, 5, 5), (2, 4, 3, 0, 5), (2, 4, 3, 5, 0), (0, 4, 2, 0, 0)]


@pytest.mark.parametrize("with_offsets", [True, False])
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("backend", ["auto", "reference", *FAST_BACKENDS])
def test_empty_batch_and_maps_work(backend: str, shape: tuple, with_offsets: bool) -> None:
    b, c, t, h, w = shape
    x = torch.randn(shape, requires_grad=True)
    off = torch.randn(b, 18, t - 1, h, w, requires_grad=True) if with_offsets else None
    y = sifa_attention(x, off, backend=backend)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    if off is not None:
        assert off.grad is not None and off.grad.shape == off.shape


@pytest.mark.parametrize("impl", [sifa_attention_cpu, sifa_attention_torch], ids=["cpu", "torch"])
def test_backend_functions_accept_empty_inputs(impl: Callable[..., torch.Tensor]) -> None:
    x = torch.randn(0, 4, 3, 5, 5, requires_grad=True)
    off = torch.randn(0, 18, 2, 5, 5, requires_grad=True)
    y = impl(x, off, 3, 1, 1, False)
    assert y.shape == x.shape
    gx, goff = torch.autograd.grad(y.sum(), (x, off))
    assert gx.shape == x.shape and goff.shape == off.shape
    y = impl(torch.randn(2, 4, 3, 0, 5), None, 3, 1, 1, True)
    assert y.shape == (2, 4, 3, 0, 5)


def test_offsets_none_equals_zero_offsets() -> None:
    x = torch.randn(1, 4, 3, 4, 4)
    torch.testing.assert_close(sifa_attention(x, None), sifa_attention(x, torch.zeros(1, 18, 2, 4, 4)))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.randn(1, 4, 5, 5)}, ValueError, "5-D"),
        ({"x": torch.randn(1, 4, 2, 5, 5).int()}, TypeError, "floating point"),
        ({"x": [1.0]}, TypeError, "torch.Tensor"),
        ({"groups": 3}, ValueError, "divisible by groups"),
        ({"kernel_size": 0}, ValueError, "kernel_size"),
        ({"dilation": 0}, ValueError, "dilation"),
        ({"offsets": torch.randn(1, 8, 2, 5, 5)}, ValueError, "offsets must be"),
        ({"offsets": torch.randn(1, 18, 3, 5, 5)}, ValueError, "offsets must cover"),
        ({"offsets": torch.randn(1, 18, 2, 5, 5, dtype=torch.float64)}, TypeError, "dtype"),
        ({"offsets": torch.randn(1, 18, 2, 5, 5, device="meta")}, ValueError, "offsets are on meta"),
        ({"offsets": torch.full((1, 18, 2, 5, 5), float("nan"))}, ValueError, "sampling offsets contain NaN or Inf"),
        ({"offsets": torch.full((1, 18, 2, 5, 5), float("inf"))}, ValueError, "input clip"),
        ({"normalize": "sparsemax"}, ValueError, "normalize"),
        ({"backend": "cuda-magic"}, ValueError, "backend"),
    ],
)
def test_bad_inputs_raise(kwargs: dict, error: type, match: str) -> None:
    args = {"x": torch.randn(1, 4, 2, 5, 5), "offsets": None}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sifa_attention(**args)


def test_auto_selects_fused_cpu_kernel() -> None:
    assert available_backends("cpu")["cpu"][0]
    name, why = selected_backend("cpu")
    assert name == "cpu", why
    assert selected_backend("cuda")[0] in ("triton", "torch")


def test_auto_falls_back_to_torch_without_build_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    from sifa_hub.ops import cpu

    monkeypatch.setattr(cpu._STATE, "module", None)
    monkeypatch.setattr(cpu._STATE, "error", "ninja not found (pip install ninja)")
    name, why = selected_backend("cpu")
    assert name == "torch" and "ninja" in why
    assert available_backends("cpu")["cpu"] == (False, "ninja not found (pip install ninja)")
    x = torch.randn(1, 4, 3, 4, 4)
    torch.testing.assert_close(sifa_attention(x), sifa_attention(x, backend="torch"))
    with pytest.raises(ValueError, match="ninja"):
        sifa_attention(x, backend="cpu")


def test_forced_backend_on_wrong_device_raises() -> None:
    with pytest.raises(ValueError, match="triton"):
        sifa_attention(torch.randn(1, 4, 2, 3, 3), backend="triton")


def in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of the 5-D ``t`` in another memory layout (same shape)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "permuted":  # (B, T, C, H, W) storage seen as (B, C, T, H, W), as Swin's blocks pass it
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last_3d)
    if layout == "strided":  # every other column of a wider map
        wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
        wide[..., ::2] = t
        return wide[..., ::2]
    raise ValueError(layout)


LAYOUTS = ["contiguous", "permuted", "channels_last", "strided"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_offsets", [True, False])
def test_cpu_custom_op_opcheck(with_offsets: bool, layout: str) -> None:
    gen = torch.Generator().manual_seed(4)
    x = in_layout(torch.randn(2, 4, 3, 4, 5, dtype=torch.float64, generator=gen), layout).requires_grad_()
    off = torch.randn(2, 18, 2, 4, 5, dtype=torch.float64, generator=gen) * 1.3
    off = in_layout(off, layout).requires_grad_() if with_offsets else None
    assert layout == "contiguous" or not x.is_contiguous()
    torch.library.opcheck(torch.ops.sifa_hub.cpu_forward.default, (x, off, 3, 1, 2, False))
    grad_y = in_layout(torch.randn(2, 4, 3, 4, 5, dtype=torch.float64, generator=gen), layout)
    x, off = x.detach(), None if off is None else off.detach()  # the backward op is not differentiable itself
    torch.library.opcheck(torch.ops.sifa_hub.cpu_backward.default, (grad_y, x, off, 3, 1, 2, True, with_offsets))
    y = torch.ops.sifa_hub.cpu_forward(x, off, 3, 1, 2, False)
    grads = torch.ops.sifa_hub.cpu_backward(grad_y, x, off, 3, 1, 2, True, with_offsets)
    # The kernel keeps the channels_last_3d layout (models' and Swin's tokens) and returns contiguous otherwise.
    fmt = torch.channels_last_3d if layout == "channels_last" else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt) and grads[0].is_contiguous(memory_format=fmt)
    assert grads[1].is_contiguous(memory_format=fmt if with_offsets else torch.contiguous_format)
    want = sifa_attention(x.contiguous(), None if off is None else off.contiguous(), 3, 1, 2, backend="reference")
    torch.testing.assert_close(y, want)


@pytest.mark.parametrize("layout", ["permuted", "channels_last", "strided"])
def test_fake_kernel_strides_equal_real_ones(layout: str) -> None:
    x = in_layout(torch.randn(1, 4, 3, 4, 5), layout)
    off = in_layout(torch.randn(1, 18, 2, 4, 5), layout)
    real = torch.ops.sifa_hub.cpu_forward(x, off, 3, 1, 1, False)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = torch.ops.sifa_hub.cpu_forward(mode.from_tensor(x), mode.from_tensor(off), 3, 1, 1, False)
    assert (fake.shape, fake.stride()) == (real.shape, real.stride())


def test_cpu_kernel_compiles_with_torch_compile() -> None:
    x = torch.randn(1, 4, 3, 4, 5, requires_grad=True)
    off = torch.randn(1, 18, 2, 4, 5, requires_grad=True)
    fn = torch.compile(lambda a, b: sifa_attention_cpu(a, b, 3, 1, 1, False).square().sum(), backend="aot_eager")
    loss = fn(x, off)
    loss.backward()
    x2, off2 = x.detach().clone().requires_grad_(), off.detach().clone().requires_grad_()
    sifa_attention_cpu(x2, off2, 3, 1, 1, False).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(off.grad, off2.grad)


TRITON_SCRIPT = """
import torch
from sifa_hub.ops import sifa_attention, sifa_attention_reference, selected_backend

assert selected_backend("cpu")[0] == "cpu"  # interpreter mode never hijacks "auto" on CPU
failures = []
for case in CASES:
    b, c, t, h, w, k, d, g, normalize, with_offsets = case
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, t, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    off = (torch.randn(b, 2 * k * k, t - 1, h, w, generator=gen, dtype=torch.float64) * 1.5).requires_grad_()
    inputs = [x, off] if with_offsets else [x]
    y = sifa_attention(x, off if with_offsets else None, k, d, g, normalize, backend="triton")
    ref_off = off if with_offsets else torch.zeros_like(off)
    y_ref = sifa_attention_reference(x, ref_off, k, d, g, normalize)
    grad = torch.randn_like(y)
    errors = [(y - y_ref).abs().max().item()]
    for got, want in zip(torch.autograd.grad(y, inputs, grad), torch.autograd.grad(y_ref, inputs, grad)):
        errors.append((got - want).abs().max().item())
    y32 = sifa_attention(x.detach().float(), off.detach().float(), k, d, g, normalize, backend="triton")
    errors.append((y32.double() - sifa_attention_reference(x, off, k, d, g, normalize)).abs().max().item() / 1e4)
    if max(errors) > 1e-9:
        failures.append((case, errors))
assert not failures, failures
from sifa_hub.ops.triton_backend import sifa_attention_triton
for shape in [(0, 4, 3, 4, 4), (1, 4, 3, 0, 4), (1, 4, 2, 3, 0)]:
    x = torch.randn(shape, requires_grad=True)
    off = torch.randn(shape[0], 18, shape[2] - 1, *shape[3:], requires_grad=True)
    for y in (sifa_attention_triton(x, off, 3, 1, 1, False), sifa_attention(x, off, backend="triton")):
        gx, goff = torch.autograd.grad(y.sum(), (x, off))
        assert y.shape == gx.shape == x.shape and goff.shape == off.shape, shape
x = torch.randn(1, 2, 3, 2, 3, dtype=torch.float64).transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
off = (torch.randn(1, 18, 2, 2, 3, dtype=torch.float64) * 1.3).requires_grad_()
torch.library.opcheck(torch.ops.sifa_hub.triton_forward.default, (x, off, 3, 1, 1, False))
print("ok")
"""


def run_triton_interpreter(cases: list[tuple]) -> None:
    env = dict(os.environ, TRITON_INTERPRET="1")
    code = f"CASES = {cases!r}\n" + textwrap.dedent(TRITON_SCRIPT)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_triton_kernels_match_reference_in_interpreter() -> None:
    # (B, C, T, H, W, K, dilation, groups, normalize, offsets?): borders, groups, softmax, T=2, no offsets.
    run_triton_interpreter([(1, 4, 3, 3, 4, 3, 1, 2, None, True), (1, 4, 2, 2, 3, 3, 1, 1, "softmax", False)])


@pytest.mark.slow
def test_triton_kernels_match_reference_in_interpreter_more_shapes() -> None:
    run_triton_interpreter(
        [
            (1, 6, 2, 1, 4, 3, 2, 3, "softmax", True),
            (1, 4, 3, 4, 1, 5, 1, 2, None, True),
            (1, 2, 2, 3, 3, 1, 1, 1, "softmax", True),
            (1, 70, 2, 3, 2, 3, 1, 1, None, True),
        ]
    )
