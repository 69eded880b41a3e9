"""SIFA-Net's frame-wise 2D convs in ``channels_last_3d`` layout compute exactly the plain ``Conv3d`` network.

Most tests run twice: with every conv frame-wise (``min_frame_pixels = 0``, the path under test everywhere) and
with the default threshold, where the small maps of these test clips run as ``Conv3d`` (mixed layouts).
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import sifa_hub  # noqa: F401  (registers the models)
from sifa_hub.layers import SIFA, FrameConv3d
from sifa_hub.models.sifa_resnet import SifaResNet

CL3 = torch.channels_last_3d
# a reduced sifa_resnet50: early stride 4 stem, stem max pool, strided downsample convs, GC, SIFA and dual blocks
SMALL_R50 = {"layers": (1, 2, 2, 2), "width_per_group": 16, "num_frames": 16, "num_classes": 6}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=["all_frame_wise", "default_threshold"])
def frame_wise(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with every 2D-kernel conv frame-wise, and with the default size threshold."""
    if request.param == "all_frame_wise":
        monkeypatch.setattr(FrameConv3d, "min_frame_pixels", 0)
    return str(request.param)


@pytest.fixture
def all_frame_wise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FrameConv3d, "min_frame_pixels", 0)


def _plain_conv3d(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose :class:`FrameConv3d` modules are plain ``nn.Conv3d`` (same configuration and
    parameters): the network as it was before the frame-wise path, the reference of these tests."""
    ref = copy.deepcopy(model)
    for module in ref.modules():
        if isinstance(module, FrameConv3d):
            module.__class__ = nn.Conv3d
    assert not any(isinstance(m, FrameConv3d) for m in ref.modules())
    return ref


def _model(name: str) -> SifaResNet:
    """A float64 model whose every branch is active: random BN affine/statistics, non-zero SIFA offset convs.

    The SIFA operator runs its pure-PyTorch backend: the comparisons are about the convs, and that backend does not
    depend on the C++ kernel's build.
    """
    if name == "small_r50":
        model = SifaResNet(**SMALL_R50, drop_rate=0.0, sifa_backend="torch")
    else:
        model = timm.create_model(name, num_classes=6, drop_rate=0.0, sifa_backend="torch")
    model = model.double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, SIFA) and m.conv_offset is not None:
                m.conv_offset.weight.normal_(0, 0.05)
    return model


def _assert_equal64(got: torch.Tensor, want: torch.Tensor, msg: str = "") -> None:
    """Equal up to float64 rounding: ``max |got - want| <= 1e-11 · max(1, max |want|)``."""
    scale = max(1.0, float(want.detach().abs().max()))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-11 * scale, msg=msg or None)


def _clip(name: str, batch: int = 2) -> torch.Tensor:
    t, size = (16, 64) if name == "small_r50" else (8, 32)
    return torch.randn(batch, 3, t, size, size, dtype=torch.float64)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "bias"),
    [((1, 1, 1), (1, 1, 1), 0, False), ((1, 3, 3), (1, 2, 2), (0, 1, 1), True), ((1, 3, 3), 1, (0, 1, 1), False)],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
def test_frame_conv_equals_conv3d(
    kernel: tuple, stride: object, padding: object, bias: bool, layout: str, frame_wise: str
) -> None:
    conv = FrameConv3d(6, 10, kernel, stride, padding, bias=bias, dtype=torch.float64)
    x = torch.randn(2, 6, 3, 9, 8, dtype=torch.float64)  # 3·9·8 output pixels per clip at most: below the default
    if layout == "channels_last_3d":
        x = x.contiguous(memory_format=CL3)
    x.requires_grad_()
    y = conv(x)
    want = F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-12)
    assert conv._frame_wise(x) == (frame_wise == "all_frame_wise")
    if conv._frame_wise(x):
        assert y.is_contiguous(memory_format=CL3) == (layout == "channels_last_3d")
    grad = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, conv.weight) + ((conv.bias,) if bias else ()), grad)
    ref = torch.autograd.grad(want, (x, conv.weight) + ((conv.bias,) if bias else ()), grad)
    for g, r in zip(got, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-11)


def test_frame_conv_falls_back_to_conv3d_for_temporal_kernels(all_frame_wise: None) -> None:
    """A kernel, stride or padding along time is not frame-wise: the module is then an ``nn.Conv3d``."""
    x = torch.randn(1, 4, 6, 7, 7, dtype=torch.float64)
    for conv in (
        FrameConv3d(4, 5, (3, 1, 1), padding=(1, 0, 0), dtype=torch.float64),
        FrameConv3d(4, 5, 1, stride=(2, 1, 1), dtype=torch.float64),
        FrameConv3d(4, 5, (1, 3, 3), padding=(1, 1, 1), dtype=torch.float64),
        FrameConv3d(4, 5, (1, 3, 3), padding="same", dtype=torch.float64),
    ):
        assert not conv._frame_wise(x)
        want = F.conv3d(x, conv.weight, conv.bias, conv.stride, conv.padding)
        torch.testing.assert_close(conv(x), want, rtol=0, atol=1e-12)


def test_frame_wise_from_the_output_pixels_per_clip() -> None:
    """The threshold counts ``T·H'·W'`` (output pixels of one clip, whatever the batch), so that sifa_resnet50 on
    16x224x224 clips runs layer1-3 and the dual branch frame-wise, layer4 (4·7·7 output pixels; all but the
    first 1x1 conv, on 14·14) as ``Conv3d``."""
    conv = FrameConv3d(8, 8, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    limit = FrameConv3d.min_frame_pixels
    assert conv._frame_wise(torch.empty(1, 8, limit, 2, 2))  # T·1·1 = limit
    assert not conv._frame_wise(torch.empty(64, 8, limit - 1, 2, 2))
    model = timm.create_model("sifa_resnet50", num_classes=4)
    seen: dict[str, bool] = {}
    for name, m in model.named_modules():
        if isinstance(m, FrameConv3d):
            m.register_forward_pre_hook(lambda mod, args, name=name: seen.update({name: mod._frame_wise(args[0])}))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 16, 224, 224))
    assert not seen.pop("conv1")  # the (4, 7, 7) stem
    assert {n for n, f in seen.items() if not f} == {n for n in seen if n.startswith("layer4.")} - {"layer4.0.conv1"}


def test_trunk_convs_are_frame_wise_with_conv3d_parameters() -> None:
    """Every conv is a :class:`FrameConv3d` (the stem too: with early stride 1 its kernel is ``(1, 7, 7)``,
    otherwise it runs as ``Conv3d``; and the SIFA offset convs); state-dict keys and shapes are ``Conv3d``'s."""
    for name in ("sifa_resnet50", "sifa_resnet_pico"):
        model = timm.create_model(name, num_classes=4)
        convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv3d)}
        frame = {n for n, m in convs.items() if isinstance(m, FrameConv3d)}
        assert frame == set(convs) and any(n.endswith("sifa.conv_offset") for n in frame)
        assert convs["conv1"].kernel_size[0] == model.early_stride
        ref = _plain_conv3d(model).state_dict()
        assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.items()}


@pytest.mark.parametrize("name", ["sifa_resnet_pico", "c2d_resnet_pico", "small_r50"])
@pytest.mark.parametrize("train", [False, True])
def test_same_function_as_plain_conv3d(name: str, train: bool, frame_wise: str) -> None:
    """Outputs, both heads, feature maps and every gradient equal the plain ``Conv3d`` network's (float64)."""
    model = _model(name).train(train)
    ref = _plain_conv3d(model).train(train)
    x = _clip(name)
    a, b = model.forward_heads(x)
    ra, rb = ref.forward_heads(x)
    _assert_equal64(a, ra)
    _assert_equal64(b, rb)
    w = torch.randn_like(a)
    ((a * w).sum() + (b * w).square().sum()).backward()
    ((ra * w).sum() + (rb * w).square().sum()).backward()
    for (n, p), (rn, rp) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert n == rn and p.grad is not None and rp.grad is not None, n
        _assert_equal64(p.grad, rp.grad, msg=n)
    if train:  # the running statistics were updated alike
        for (n, buf), (_, rbuf) in zip(model.named_buffers(), ref.named_buffers(), strict=True):
            _assert_equal64(buf.double(), rbuf.double(), msg=n)
    with torch.no_grad():
        maps = model.eval().forward_intermediates(x, intermediates_only=True)
        ref_maps = ref.eval().forward_intermediates(x, intermediates_only=True)
    for m, r in zip(maps, ref_maps, strict=True):
        _assert_equal64(m, r)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["sifa_resnet_pico", "small_r50"])
def test_activations_stay_channels_last_3d(name: str, dtype: torch.dtype, all_frame_wise: None) -> None:
    """With every conv frame-wise, every 5-D activation after the stem conv is ``channels_last_3d`` (the frame
    views need no copies), and the maps handed to users are ``(B, C, T, H, W)`` tensors in that layout. (The stem
    conv's own output has it where oneDNN runs the conv: float32, not the float64 ``Conv3d`` of early stride 4.)"""
    model = _model(name).to(dtype).eval()
    seen: list[tuple[str, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple, out: object) -> None:
        if isinstance(out, torch.Tensor) and out.dim() == 5:
            seen.append((names[module], out))

    names = {m: n for n, m in model.named_modules()}
    sifa_parts = {p for m in model.modules() if isinstance(m, SIFA) for p in m.modules()}
    for m in model.modules():
        if m not in sifa_parts:  # the SIFA module's outputs (offsets, the operator's) are sifa_hub.layers' business
            m.register_forward_hook(record)
    x = _clip(name, batch=1).to(dtype)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        main, dual = model.forward_features(x)
    assert len(seen) > 50
    for n, out in seen:
        if n != "conv1" or dtype == torch.float32 or model.early_stride == 1:
            assert out.is_contiguous(memory_format=CL3), n
    for m in [*maps, main, dual]:
        assert m.dim() == 5 and m.shape[0] == 1 and m.is_contiguous(memory_format=CL3)


def test_no_activation_copies_in_the_c2d_trunk(all_frame_wise: None) -> None:
    """The profiler sees one copy of an activation (a 5-D tensor of the clip's batch) in a C2D forward: the input
    clip's, into ``channels_last_3d`` at the stem (oneDNN may still copy a conv weight into its layout)."""
    model = SifaResNet(**SMALL_R50, use_sifa=False).eval()
    x = torch.randn(3, 3, 16, 64, 64)
    with torch.no_grad(), torch.profiler.profile(record_shapes=True) as prof:
        model(x)
    copies = [
        shapes[0]
        for e in prof.events()
        if e.name == "aten::copy_" and (shapes := e.input_shapes) and len(shapes[0]) == 5 and shapes[0][0] == 3
    ]
    assert copies == [list(x.shape)]
