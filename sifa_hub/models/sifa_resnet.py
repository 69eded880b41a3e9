"""SIFA-Net: a C2D ResNet with Stand-Alone Inter-Frame Attention blocks, for timm.

Paper: `Stand-Alone Inter-Frame Attention in Video Models` (Long et al., CVPR 2022), arXiv:2206.06931.
Reference code: GitHub ``FuchenUSTC/SIFA`` (``model/c2d_sifa_resnet.py``); this is an independent
re-implementation that loads the official checkpoints (see :func:`checkpoint_filter_fn`).

Architecture (reference mode = the released code):
    * C2D ResNet, ``Conv3d`` everywhere (2D kernels as ``(1, k, k)``), ``BatchNorm3d``, torchvision-style
      bottleneck; stem ``Conv3d(in_chans, 64, (E, 7, 7), stride (E, 2, 2))`` with ``E`` = early stride.
      Here the ``(1, k, k)`` convs keep their ``Conv3d`` parameters but compute as 2D convs of the frames
      (:class:`FrameConv3d`) on activations in ``channels_last_3d`` layout from the stem on, except on small maps
      where ``Conv3d`` is faster: the same function, faster on CPU. Feature maps are ``(B, C, T, H, W)`` tensors
      (with ``channels_last_3d`` strides where they come from frame-wise convs).
    * layer1: plain bottlenecks. layer2-4: blocks alternate a global-context bottleneck (even index) and a
      SIFA bottleneck (odd index, ``out = out + SIFA(out)`` after conv2-bn-relu).
    * Two heads: ``layer4`` at full time and ``layer4_dual`` (layer4's structure, spatial stride 1) on
      layer3's output max-pooled over time by 2; each is average pooled, dropped out and classified.
      The reference objective is ``CE(logits_a) + CE(logits_b)``, its prediction ``(softmax(a) + softmax(b)) / 2``.

What ``forward()`` returns (train and eval alike): ``log((softmax(a) + softmax(b)) / 2)``, the log of the
reference prediction, as a ``(B, num_classes)`` tensor. Its softmax/argmax equal the official inference, and
a generic timm training loop (cross entropy, label smoothing, mixup targets on ``model(x)``) trains the
mixture ``-log((p_a + p_b) / 2)``, a proper loss of exactly the distribution used at test time. For the
reference two-branch objective use :meth:`SifaResNet.forward_heads` and :meth:`SifaResNet.loss`.

Deviations from the released code:
    * the offset conv's input uses ``prev[t] = x[t-1]`` (the spec and the code's stated intent). The released
      block builds ``prev`` with the self-overlapping in-place copy ``out_tmp[:, :, 1:] = out_tmp[:, :, :-1]``,
      whose result is implementation-defined: PyTorch's CPU kernel copies front to back in 64-byte chunks, so
      ``prev[t]`` becomes ``x[0]`` for maps with ``H·W >= 8`` (float64), and on GPU it is a race. The official
      golden outputs (``official_sifa_net_small``) carry that CPU artifact; the tests emulate it to reproduce
      them to 1e-8, and with ``prev[t] = x[t-1]`` the same weights differ from them by ~1e-4 in the logits;
    * the SIFA offset conv starts at zero, as the paper and spec say (the released model's global kaiming
      init loop overwrites the block's ``zero_()``, so its offsets start random);
    * optional stochastic depth (``drop_path_rate``, default 0) and narrow/small-input options used by
      ``sifa_resnet_pico`` (``stem_width``, ``base_planes``, ``stem_stride``, ``stem_pool``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ..layers import SIFA, FrameConv3d
from ._builder import build_sifa_model
from ._helpers import (
    adapt_stem_weight,
    check_output_fmt,
    check_state_dict,
    fit_classifier,
    inflate_conv_weight,
    unwrap_state_dict,
)
from ._pretrained import imagenet_cfgs, pico_motion_cfg
from ._validation import check_clip

__all__ = ["SifaBottleneck", "SifaResNet", "checkpoint_filter_fn", "combine_heads", "dual_head_loss"]

_logger = logging.getLogger(__name__)


def combine_heads(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Log of the reference prediction: ``log((softmax(a) + softmax(b)) / 2)``, computed stably.

    Args:
        logits_a: main-head logits ``(B, N)``.
        logits_b: dual-head logits ``(B, N)``.

    Returns:
        ``(B, N)`` log-probabilities; ``softmax`` of them is the official two-head inference output.
    """
    both = torch.stack([logits_a.log_softmax(-1), logits_b.log_softmax(-1)])  # (2, B, N)
    return torch.logsumexp(both, dim=0) - math.log(2.0)


def dual_head_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    target: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Reference training objective ``CE(logits_a, target) + CE(logits_b, target)`` (mean over the batch).

    Args:
        logits_a: main-head logits ``(B, N)``.
        logits_b: dual-head logits ``(B, N)``.
        target: class indices ``(B,)`` or class probabilities ``(B, N)`` (mixup/cutmix targets).
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy` (the released configs use 0.1
            through their own ``LSR`` loss).
    """
    return F.cross_entropy(logits_a, target, label_smoothing=label_smoothing) + F.cross_entropy(
        logits_b, target, label_smoothing=label_smoothing
    )


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> FrameConv3d:
    return FrameConv3d(in_planes, out_planes, kernel_size=1, stride=(1, stride, stride), bias=False)


def _conv1x3x3(in_planes: int, out_planes: int, stride: int = 1) -> FrameConv3d:
    return FrameConv3d(
        in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
    )


def _check_pool(global_pool: str | None, num_classes: int) -> str:
    """``"avg"`` or ``""`` (unpooled maps, only without classifiers)."""
    if global_pool not in ("avg", ""):
        raise ValueError(f"SifaResNet supports global_pool='avg' or '' (unpooled maps), got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError("SifaResNet: global_pool='' (unpooled maps) needs num_classes=0 (no classifier)")
    return global_pool


class Bottleneck(nn.Module):
    """torchvision-style bottleneck on ``(B, C, T, H, W)`` with ``(1, k, k)`` kernels (the C2D block).

    Subclasses hook in at two points: :meth:`mix` (after conv2-bn-relu, on the bottleneck width) and
    :meth:`context` (after bn3, before the residual add).

    Args:
        inplanes: input channels.
        planes: bottleneck planes; the output has ``planes * 4`` channels.
        stride: spatial stride of conv2 (and of the downsample shortcut).
        downsample: shortcut projection, or ``None`` for identity.
        width_per_group: bottleneck width is ``planes * width_per_group / 64``.
        drop_path: stochastic depth rate of the residual branch.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        width_per_group: int = 64,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (width_per_group / 64.0))
        outplanes = planes * self.expansion
        self.width = width
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm3d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = _conv1x3x3(width, width, stride)
        self.bn2 = nn.BatchNorm3d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = _conv1x1(width, outplanes)
        self.bn3 = nn.BatchNorm3d(outplanes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Hook on the bottleneck width ``(B, width, T, H, W)``; identity in the plain block."""
        return x

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """Hook on the residual branch ``(B, 4·planes, T, H, W)``; identity in the plain block."""
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, 4·planes, T, H', W')
        out = self.act1(self.bn1(self.conv1(x)))  # (B, width, T, H, W)
        out = self.act2(self.bn2(self.conv2(out)))  # (B, width, T, H', W')
        out = self.bn3(self.conv3(self.mix(out)))  # (B, 4·planes, T, H', W')
        out = self.drop_path(self.context(out))
        return self.act3(out + shortcut)


class GlobalContextBottleneck(Bottleneck):
    """Bottleneck whose residual branch gets ``fc2(relu(fc1(avgpool(out))))`` added per channel.

    ``fc1`` reduces the ``4·planes`` channels ×16; both layers have a bias (official ``GBottleneck``).
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        width_per_group: int = 64,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, width_per_group, drop_path)
        channels = planes * self.expansion
        self.fc1 = nn.Linear(channels, channels // 16)
        self.fc1_act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(channels // 16, channels)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        gc = self.fc2(self.fc1_act(self.fc1(x.mean(dim=(2, 3, 4)))))  # (B, C)
        return x + gc[:, :, None, None, None]


class SifaBottleneck(Bottleneck):
    """Bottleneck with ``out = out + SIFA(out)`` after conv2-bn-relu (official ``DEFLocalTransBottleneck``).

    Args:
        sifa_kernel: K of the SIFA sampling grid.
        learn_offsets: predict deformable offsets (zero-initialised conv) or keep them at zero.
        sifa_normalize: ``None`` (reference) or ``"softmax"`` (documented deviation).
        sifa_backend: operator backend for :class:`sifa_hub.layers.SIFA`.
        Other args as :class:`Bottleneck`.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        width_per_group: int = 64,
        drop_path: float = 0.0,
        sifa_kernel: int = 3,
        learn_offsets: bool = True,
        sifa_normalize: str | None = None,
        sifa_backend: str = "auto",
    ) -> None:
        super().__init__(inplanes, planes, stride, downsample, width_per_group, drop_path)
        self.sifa = SIFA(
            self.width,
            kernel_size=sifa_kernel,
            learn_offsets=learn_offsets,
            normalize=sifa_normalize,
            backend=sifa_backend,
        )

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sifa(x)  # frame t attends to frame t+1; the last frame gets nothing added


def _check_args(layers: Sequence[int], sifa_kernel: Sequence[int], num_frames: int, early_stride: int) -> None:
    """Refuse constructor arguments :class:`SifaResNet` cannot build, naming them."""
    if len(layers) != 4 or any(n < 1 for n in layers):
        raise ValueError(f"SifaResNet: layers must be 4 positive block counts, got {tuple(layers)}")
    if len(sifa_kernel) != 4:
        raise ValueError(f"SifaResNet: sifa_kernel must have 4 entries (one per stage), got {sifa_kernel}")
    if early_stride < 1 or num_frames < 2 * early_stride or num_frames % early_stride:
        raise ValueError(
            f"SifaResNet: need early_stride >= 1 and num_frames a multiple of early_stride, at least 2·early_stride "
            f"(the dual head pools time by 2), got num_frames={num_frames}, early_stride={early_stride}"
        )


class SifaResNet(nn.Module):
    """SIFA-Net (and its C2D twin with ``use_sifa=False``) on clips ``(B, C, T, H, W)``.

    Args:
        layers: blocks per stage.
        num_classes: classes of each head; 0 removes both classifiers (``forward`` returns pre-logits).
        num_frames: nominal clip length (recorded; any ``T`` divisible by ``early_stride`` with
            ``T / early_stride >= 2`` works).
        early_stride: temporal stride ``E`` of the stem (its temporal kernel length).
        in_chans: input channels.
        img_size: nominal input resolution (recorded only; the network is fully convolutional).
        drop_rate: dropout before each classifier (0.5 as released).
        drop_path_rate: stochastic depth, linear over the blocks of layer1-4 (layer4_dual mirrors layer4).
        width_per_group: bottleneck width is ``planes * width_per_group / 64``.
        stem_width: output channels of the stem (64 as released).
        base_planes: planes of layer1; later stages double it (64 as released: 64, 128, 256, 512).
        stem_stride: spatial stride of the stem conv (2 as released).
        stem_pool: keep the stem's ``(1, 3, 3)`` max pool with spatial stride 2 (True as released).
        sifa_kernel: K of the SIFA blocks per stage; stage 1 has no SIFA block, its entry is unused
            (kept for parity with the released ``[1, 3, 3, 3]``).
        use_sifa: False builds the C2D twin: every SIFA bottleneck becomes a plain bottleneck.
        learn_offsets: SIFA offsets from a zero-initialised conv (True, as released) or fixed at zero.
        sifa_normalize: ``None`` (reference) or ``"softmax"``.
        sifa_backend: operator backend (``"auto"``, ``"reference"``, ``"torch"``, ...).
        zero_init_last: zero-initialise the last BN of every residual branch.
        global_pool: ``"avg"`` (the reference head) or ``""`` (no pooling and no classifier: ``forward`` returns
            the main branch's map ``(B, C, T', h, w)``; needs ``num_classes=0``).
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 400,
        num_frames: int = 16,
        early_stride: int = 4,
        in_chans: int = 3,
        img_size: int | tuple[int, int] = 224,
        drop_rate: float = 0.5,
        drop_path_rate: float = 0.0,
        width_per_group: int = 64,
        stem_width: int = 64,
        base_planes: int = 64,
        stem_stride: int = 2,
        stem_pool: bool = True,
        sifa_kernel: Sequence[int] = (1, 3, 3, 3),
        use_sifa: bool = True,
        learn_offsets: bool = True,
        sifa_normalize: str | None = None,
        sifa_backend: str = "auto",
        zero_init_last: bool = True,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        _check_args(layers, sifa_kernel, num_frames, early_stride)
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.early_stride = early_stride
        self.in_chans = in_chans
        self.img_size = img_size
        self.drop_rate = drop_rate
        self.use_sifa = use_sifa
        self.grad_checkpointing = False
        self.learn_offsets = learn_offsets
        self.sifa_normalize = sifa_normalize
        self.sifa_backend = sifa_backend
        self.global_pool = _check_pool(global_pool, num_classes)

        # stem: (B, C, T, H, W) -> (B, stem_width, T/E, H/s, W/s); frame-wise for E = 1, a Conv3d otherwise
        self.conv1 = FrameConv3d(
            in_chans, stem_width, (early_stride, 7, 7), (early_stride, stem_stride, stem_stride), (0, 3, 3), bias=False
        )
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)) if stem_pool else nn.Identity()
        )
        reduction = stem_stride
        self.feature_info = [{"num_chs": stem_width, "reduction": reduction, "module": "act1"}]
        reduction *= 2 if stem_pool else 1

        total_blocks = sum(layers)
        dpr = [drop_path_rate * i / max(total_blocks - 1, 1) for i in range(total_blocks)]
        inplanes = stem_width
        stages = []
        for idx, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2), strict=True)):
            planes = base_planes * 2**idx
            start = sum(layers[:idx])
            stage = self._make_layer(
                inplanes, planes, blocks, stride, width_per_group, sifa_kernel[idx], idx > 0, dpr[start:][:blocks]
            )
            stages.append(stage)
            inplanes = planes * Bottleneck.expansion
            reduction *= stride
            self.feature_info.append({"num_chs": inplanes, "reduction": reduction, "module": f"layer{idx + 1}"})
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        # dual head: layer3 output max-pooled over time by 2, then layer4's structure at spatial stride 1
        self.maxpool_dual: nn.Module = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1))
        self.layer4_dual: nn.Module = self._make_layer(
            base_planes * 16, base_planes * 8, layers[3], 1, width_per_group, sifa_kernel[3], True, dpr[-layers[3] :]
        )

        self.num_features = inplanes  # channels of each branch's final map
        self.head_hidden_size = 2 * inplanes  # pre-logits: both pooled branches concatenated
        self.head_drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()
        self.fc_dual: nn.Module = nn.Linear(inplanes, num_classes) if num_classes > 0 else nn.Identity()

        self.zero_init_last = zero_init_last
        self.init_weights()

    def _make_layer(
        self,
        inplanes: int,
        planes: int,
        blocks: int,
        stride: int,
        width_per_group: int,
        sifa_kernel: int,
        temporal: bool,
        drop_path: Sequence[float],
    ) -> nn.Sequential:
        """One stage; ``temporal`` stages alternate global-context (even) and SIFA (odd) bottlenecks."""
        outplanes = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != outplanes:
            downsample = nn.Sequential(_conv1x1(inplanes, outplanes, stride), nn.BatchNorm3d(outplanes))
        out: list[Bottleneck] = []
        for i in range(blocks):
            # (inplanes, planes, stride, downsample, width_per_group, drop_path) of block i
            first = i == 0
            common = (
                inplanes if first else outplanes,
                planes,
                stride if first else 1,
                downsample if first else None,
                width_per_group,
                drop_path[i],
            )
            if temporal and i % 2 == 0:
                out.append(GlobalContextBottleneck(*common))
            elif temporal and self.use_sifa:
                out.append(
                    SifaBottleneck(
                        *common,
                        sifa_kernel=sifa_kernel,
                        learn_offsets=self.learn_offsets,
                        sifa_normalize=self.sifa_normalize,
                        sifa_backend=self.sifa_backend,
                    )
                )
            else:
                out.append(Bottleneck(*common))
        return nn.Sequential(*out)

    @torch.jit.ignore
    def init_weights(self, zero_init_last: bool | None = None) -> None:
        """(Re-)initialise every tensor: the one definition of SIFA-Net's initialisation.

        Convs kaiming-normal (fan_out), BN weight 1 / bias 0 / statistics 0, 1, classifiers PyTorch's default
        ``nn.Linear`` init, then the zero paths: SIFA offset convs and (``zero_init_last``) the last BN of every
        residual branch. Only ``torch.nn.init`` functions are used, so transformers' guard can skip tensors
        loaded from a checkpoint (the hf adapter delegates its ``_init_weights`` here).

        Args:
            zero_init_last: zero the last BN per residual branch; ``None``: as the model was built.
        """
        zero_last = self.zero_init_last if zero_init_last is None else zero_init_last
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                if m.running_mean is not None and m.running_var is not None:
                    nn.init.zeros_(m.running_mean)
                    nn.init.ones_(m.running_var)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
        for m in self.modules():
            if isinstance(m, SIFA) and m.conv_offset is not None:
                nn.init.zeros_(m.conv_offset.weight)
            if zero_last and isinstance(m, Bottleneck):
                m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise LR decay; layer4_dual blocks share layer4's groups."""
        blocks: Any = r"^layer(\d+)" if coarse else [(r"^layer(\d+)\.(\d+)", None), (r"^layer(4)_dual\.(\d+)", None)]
        return {"stem": r"^conv1|^bn1|^maxpool", "blocks": blocks}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """No parameter needs exemption beyond timm's default rule (1-D params: norms and biases)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> tuple[nn.Module, nn.Module] | tuple[str, str]:
        """Both classifiers, main head first."""
        return ("fc", "fc_dual") if name_only else (self.fc, self.fc_dual)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace both classifiers; ``num_classes=0`` makes ``forward`` return pre-logits ``(B, 2·C)``.

        Args:
            num_classes: classes of each head (0: no classifier).
            global_pool: ``"avg"``, ``""`` (with ``num_classes=0``: ``forward`` returns the main branch's
                unpooled map) or ``None`` (unchanged).
        """
        self.global_pool = _check_pool(self.global_pool if global_pool is None else global_pool, num_classes)
        self.num_classes = num_classes
        ref = self.conv1.weight
        for name in ("fc", "fc_dual"):
            head = (
                nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
                if num_classes > 0
                else nn.Identity()
            )
            setattr(self, name, head)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` unless ``x`` is a ``(B, C, T, H, W)`` clip this model can take.

        Checks the type and dtype (a float tensor of the weights' dtype: integer frames must be converted and
        normalised first), finite values, then the layout, channels and clip length.
        """
        check_clip(x, self, self.conv1.weight)
        if x.dim() != 5:
            raise ValueError(f"{type(self).__name__} expects a clip (B, C, T, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        if c != self.in_chans:
            if t == self.in_chans:
                raise ValueError(
                    f"input of shape {tuple(x.shape)} looks like (B, T, C, H, W); permute to (B, C, T, H, W) "
                    f"with x.permute(0, 2, 1, 3, 4)"
                )
            raise ValueError(f"expected {self.in_chans} input channels in dim 1 of (B, C, T, H, W), got {c}")
        e = self.early_stride
        if t % e or t < 2 * e:
            raise ValueError(
                f"clip length T={t} must be a multiple of early_stride={e} and at least {2 * e} "
                f"(the dual head pools the {t // e} time steps by 2)"
            )

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stem conv-bn-relu ``(B, C, T, H, W)`` → ``(B, stem_width, T/E, H/s, W/s)``, ``channels_last_3d``.

        The clip is converted to ``channels_last_3d`` once, here, and the later ops keep that layout while the
        convs run frame-wise (reading it without copies, see :class:`FrameConv3d`); where the maps get small the
        convs run as ``Conv3d`` and the rest of the branch is channels-first. A ``channels_last_3d`` input is also
        the faster one for oneDNN's stem conv, whose output then has that layout too; the second conversion only
        acts where the conv does not keep it (``Conv3d`` in float64, without oneDNN).
        """
        x = self.conv1(x.contiguous(memory_format=torch.channels_last_3d))
        return self.act1(self.bn1(x.contiguous(memory_format=torch.channels_last_3d)))

    def _run(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and isinstance(layer, nn.Sequential) and not torch.jit.is_scripting():
            return checkpoint_seq(layer, x)
        return layer(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCTHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[tuple[torch.Tensor, torch.Tensor], list[torch.Tensor]]:
        """Main-branch feature maps of the stem and layer1-4 (``feature_info`` order), each ``(B, C, T, H, W)``.

        Args:
            x: clip ``(B, C, T, H, W)``.
            indices: last n taps if int, all if None, else the listed taps (0 = stem, 4 = layer4).
            norm: unused (no final norm in a ResNet); accepted for the timm interface.
            stop_early: with ``intermediates_only``, stop after the last requested tap.
            output_fmt: only ``"NCTHW"`` (any other value is refused with a message).
            intermediates_only: return only the list of maps.

        Returns:
            The list of maps, or ``((main, dual), maps)`` where ``(main, dual)`` is :meth:`forward_features`.
        """
        check_output_fmt(self, output_fmt)
        self.check_input(x)
        take_indices, max_index = feature_take_indices(5, indices)
        intermediates = []
        x = self._stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        last = max_index if (stop_early and intermediates_only) else 4
        layers = (self.layer1, self.layer2, self.layer3, self.layer4)
        x3 = x
        for i, layer in enumerate(layers[:last], start=1):
            x = self._run(layer, x)
            if i == 3:
                x3 = x
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return (x, self._run(self.layer4_dual, self.maxpool_dual(x3))), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop what the requested :meth:`forward_intermediates` taps do not need (timm's feature-extractor hook).

        Stages after the last tap become ``nn.Identity``; with ``prune_head`` (or a pruned layer4) the dual
        branch and both classifiers go too. A pruned model is a feature extractor: use
        ``forward_intermediates(..., intermediates_only=True)``.

        Args:
            indices: taps as in :meth:`forward_intermediates` (0 = stem, 4 = layer4).
            prune_norm: unused (a ResNet has no final norm).
            prune_head: also drop the dual branch and the classifiers.

        Returns:
            The tap indices kept.
        """
        take_indices, max_index = feature_take_indices(5, indices)
        for i in range(max_index + 1, 5):
            setattr(self, f"layer{i}", nn.Identity())
        if prune_head or max_index < 4:
            self.maxpool_dual, self.layer4_dual = nn.Identity(), nn.Identity()
            self.reset_classifier(0, "avg")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final maps of both branches.

        Args:
            x: clip ``(B, C, T, H, W)``, ``T`` a multiple of ``early_stride``.

        Returns:
            ``(main, dual)``: main ``(B, num_features, T/E, h, w)`` from layer4, dual
            ``(B, num_features, T/(2E), 2h, 2w)`` from layer4_dual.
        """
        self.check_input(x)
        x = self.maxpool(self._stem(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3], x, flatten=True)
        else:
            x = self.layer3(self.layer2(self.layer1(x)))  # (B, 8·base, T/E, 2h, 2w)
        main = self._run(self.layer4, x)  # (B, C, T/E, h, w)
        dual = self._run(self.layer4_dual, self.maxpool_dual(x))  # (B, C, T/(2E), 2h, 2w)
        return main, dual

    def _pooled(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        main, dual = features
        return self.head_drop(main.mean(dim=(2, 3, 4))), self.head_drop(dual.mean(dim=(2, 3, 4)))  # (B, C) each

    def forward_head(self, x: Sequence[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        """Pool, drop out and classify both branches.

        Args:
            x: ``(main, dual)`` from :meth:`forward_features`.
            pre_logits: return the pooled features of both branches concatenated, ``(B, 2·num_features)``
                (also what ``forward`` returns once ``reset_classifier(0)`` removed the classifiers).

        Returns:
            ``(B, num_classes)`` log of the reference prediction (see :func:`combine_heads`); with
            ``global_pool=""`` the main branch's unpooled map ``(B, C, T', h, w)``.
        """
        if self.global_pool == "":
            return x[0]  # unpooled main-branch map (B, C, T', h, w)
        a, b = self._pooled(x)
        if pre_logits or self.num_classes == 0:
            return torch.cat([a, b], dim=1)
        return combine_heads(self.fc(a), self.fc_dual(b))

    def forward_head_logits(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw logits of both heads from :meth:`forward_features`' ``(main, dual)``: ``((B, N), (B, N))``.

        :meth:`forward_head` combines them (:func:`combine_heads`); the hf adapter and the reference loss use them.
        """
        if self.num_classes == 0 or self.global_pool != "avg":
            raise ValueError("the head logits need classifiers; this model was reset to num_classes=0")
        a, b = self._pooled(features)
        return self.fc(a), self.fc_dual(b)

    def forward_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw logits of both heads, ``((B, N), (B, N))``: main (layer4) and dual (layer4_dual)."""
        if self.num_classes == 0:
            raise ValueError("forward_heads needs classifiers; this model was reset to num_classes=0")
        return self.forward_head_logits(self.forward_features(x))

    def loss(
        self,
        x: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Reference two-branch loss ``CE(a) + CE(b)`` (see :func:`dual_head_loss`).

        Args:
            x: a clip ``(B, C, T, H, W)`` or the ``(logits_a, logits_b)`` pair of :meth:`forward_heads`.
            target: class indices ``(B,)`` or probabilities ``(B, N)``.
            label_smoothing: cross-entropy label smoothing.
        """
        logits = x if isinstance(x, (tuple, list)) else self.forward_heads(x)
        return dual_head_loss(logits[0], logits[1], target, label_smoothing=label_smoothing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, num_classes)``: ``log((softmax(a) + softmax(b)) / 2)``."""
        return self.forward_head(self.forward_features(x))


_CLASSIFIER_KEYS = ("fc.weight", "fc.bias", "fc_dual.weight", "fc_dual.bias")


def checkpoint_filter_fn(
    state_dict: Mapping[str, Any], model: SifaResNet, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Convert a checkpoint for :class:`SifaResNet`; raise a readable report on any mismatch.

    Accepted sources:
        * our own state dict (pass-through);
        * official SIFA-Net checkpoints (``module.`` prefix, ``{"state_dict": ...}`` containers): the fixed
          ``def_cor.weight`` constants (1/C) are dropped, ``<block>.conv_offset`` becomes
          ``<block>.sifa.conv_offset``; every other key must match;
        * 2D ImageNet ResNets (timm ``resnet50``/``resnet101``, torchvision; same key names): conv weights
          ``(O, I, kh, kw)`` → ``(O, I, 1, kh, kw)``, the stem kernel gets temporal length E with the 2D kernel
          at index E//2, layer4 also initialises layer4_dual, ``fc`` initialises both heads. Keys a 2D ResNet
          cannot have keep the model's initialisation: SIFA offset convs (zero) and the global-context
          ``fc1``/``fc2`` (official default ``nn.Linear`` init, so GC blocks add a per-channel constant at
          the start).

    For every source, classifiers that fit the model load (whatever the registered ``num_classes``); others keep
    the model's initialisation with a WARNING naming ``source`` and both shapes (quietly for a model built with
    ``num_classes=0``), see :func:`~sifa_hub.models._helpers.fit_classifier`; a stem with other input channels is
    adapted as in timm. Keys kept at initialisation are logged; any other missing, unexpected or mis-shaped key
    raises :class:`~sifa_hub.models._helpers.CheckpointMismatchError`.

    Args:
        state_dict: the checkpoint (containers and a ``module.`` prefix are unwrapped).
        model: the model to load into.
        source: the checkpoint's name in messages (the builder passes the file path).
    """
    state = unwrap_state_dict(state_dict)
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("def_cor.weight"):
            continue  # official fixed 1/C correlation scale: a constant of the operator, not a parameter
        if key.endswith("conv_offset.weight") and not key.endswith("sifa.conv_offset.weight"):
            key = key[: -len("conv_offset.weight")] + "sifa.conv_offset.weight"
        out[key] = value

    from_2d = out.get("conv1.weight") is not None and out["conv1.weight"].dim() == 4
    if from_2d:
        _inflate_2d(out, own)
    stem = out.get("conv1.weight")
    if stem is not None and stem.dim() == 5:
        out["conv1.weight"] = adapt_stem_weight(stem, model.in_chans)

    keep_init = fit_classifier(out, own, _CLASSIFIER_KEYS, source)
    if from_2d:
        keep_init += [
            k for k in own if k not in out and (k.endswith("sifa.conv_offset.weight") or ".fc1." in k or ".fc2." in k)
        ]
    keep_init += [k for k in own if k not in out and k.endswith("num_batches_tracked")]
    for key in keep_init:
        out[key] = own[key].clone()
    check_state_dict(model, out, source=f"{source} (after checkpoint_filter_fn)")
    if keep_init:
        _logger.info(f"checkpoint_filter_fn: {len(keep_init)} keys keep the model's initialisation: {keep_init}")
    return out


def _inflate_2d(out: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> None:
    """2D ResNet weights in place: inflate convs, copy layer4 into layer4_dual and ``fc`` into ``fc_dual``."""
    for key, value in list(out.items()):
        if value.dim() == 4 and key in own and own[key].dim() == 5:
            time = own[key].shape[2] if key == "conv1.weight" else 1
            out[key] = inflate_conv_weight(value, time=time, center=True)
    for key in own:
        if key.startswith("layer4_dual.") and key not in out:
            src = "layer4." + key[len("layer4_dual.") :]
            if src in out:
                out[key] = out[src].clone()
    for name in ("weight", "bias"):
        if f"fc_dual.{name}" not in out and f"fc.{name}" in out:
            out[f"fc_dual.{name}"] = out[f"fc.{name}"].clone()


_DEPRECATED_NAMES = {"SIFAResNet": "SifaResNet", "SIFABottleneck": "SifaBottleneck"}


def __getattr__(name: str) -> Any:
    """Deprecated aliases of the class names before the ``Sifa*`` naming (issue 10); they warn once per use."""
    if name in _DEPRECATED_NAMES:
        new = _DEPRECATED_NAMES[name]
        warnings.warn(
            f"sifa_hub.models.sifa_resnet.{name} is deprecated; use {new} (same class)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _create_sifa_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> SifaResNet:
    """Build through :func:`~sifa_hub.models._builder.build_sifa_model` (safe weight loading, video features)."""
    return build_sifa_model(SifaResNet, variant, pretrained, checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 400,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv1",
        "classifier": ("fc", "fc_dual"),
        "license": "apache-2.0",
        "paper_ids": "arXiv:2206.06931",
        "paper_name": "Stand-Alone Inter-Frame Attention in Video Models",
        **kwargs,
    }


_PICO_CFG = {"input_size": (3, 32, 32), "pool_size": (2, 2), "crop_pct": 1.0}

# Weight tags (models/_pretrained.py): ImageNet initialisations from timm's repositories for R50/R101, the demo's
# trained model for the SIFA pico; the first tag is its variant's default (timm's rule).
default_cfgs = generate_default_cfgs(
    {
        **imagenet_cfgs("sifa_resnet50", "resnet50", _cfg()),
        **imagenet_cfgs("sifa_resnet101", "resnet101", _cfg()),
        "sifa_resnet_pico.motion4": pico_motion_cfg(_cfg(**_PICO_CFG)),
        **imagenet_cfgs("c2d_resnet50", "resnet50", _cfg()),
        **imagenet_cfgs("c2d_resnet101", "resnet101", _cfg()),
        "c2d_resnet_pico": _cfg(**_PICO_CFG),
    }
)

# pico: 8x narrower (stem 16 channels, planes 8-64, 256 features), layers [1, 2, 2, 2] (one SIFA block in each of
# stages 2-4 and in the dual branch), early stride 1, and a stem that reduces space by 2 instead of 4 (stride 2,
# no max pool): a 32x32 clip keeps 16/8/4/2 px maps in layer1-4 (4 px in the dual branch) instead of 8/4/2/1.
_PICO_ARGS: dict[str, Any] = {
    "layers": (1, 2, 2, 2),
    "stem_width": 16,
    "base_planes": 8,
    "num_frames": 8,
    "early_stride": 1,
    "stem_stride": 2,
    "stem_pool": False,
}


@register_model
def sifa_resnet50(pretrained: bool = False, **kwargs: Any) -> SifaResNet:
    """SIFA-Net R50 (layers [3, 4, 6, 3], early stride 4, 16 frames)."""
    model_args = {"layers": (3, 4, 6, 3)}
    return _create_sifa_resnet("sifa_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def sifa_resnet101(pretrained: bool = False, **kwargs: Any) -> SifaResNet:
    """SIFA-Net R101 (layers [3, 4, 23, 3], early stride 4, 16 frames)."""
    model_args = {"layers": (3, 4, 23, 3)}
    return _create_sifa_resnet("sifa_resnet101", pretrained, **dict(model_args, **kwargs))


@register_model
def sifa_resnet_pico(pretrained: bool = False, **kwargs: Any) -> SifaResNet:
    """Tiny SIFA-Net for CPU demos on 8-frame 32-64 px clips (see ``_PICO_ARGS``)."""
    model_args = {**_PICO_ARGS}
    return _create_sifa_resnet("sifa_resnet_pico", pretrained, **dict(model_args, **kwargs))


@register_model
def c2d_resnet50(pretrained: bool = False, **kwargs: Any) -> SifaResNet:
    """C2D twin of ``sifa_resnet50``: the same network with every SIFA block plain."""
    model_args = {"layers": (3, 4, 6, 3), "use_sifa": False}
    return _create_sifa_resnet("c2d_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def c2d_resnet101(pretrained: bool = False, **kwargs: Any) -> SifaResNet:
    """C2D twin of ``sifa_resnet101``: the same network with every SIFA block plain."""
    model_args = {"layers": (3, 4, 23, 3), "use_sifa": False}
    return _create_sifa_resnet("c2d_resnet101", pretrained, **dict(model_args, **kwargs))


@register_model
def c2d_resnet_pico(pretrained: bool = False, **kwargs: Any) -> SifaResNet:
    """C2D twin of ``sifa_resnet_pico``."""
    model_args = {**_PICO_ARGS, "use_sifa": False}
    return _create_sifa_resnet("c2d_resnet_pico", pretrained, **dict(model_args, **kwargs))
