"""SIFA-Transformer: Swin Transformer with Stand-Alone Inter-Frame Attention.

Paper: `Stand-Alone Inter-Frame Attention in Video Models` (Long et al., CVPR 2022), arXiv:2206.06931.
Official code: https://github.com/FuchenUSTC/SIFA (``model/c2d_sifa_swin.py``, ``model/c2d_swin_vit.py``);
this is an independent re-implementation on top of timm's Swin blocks (window attention, Mlp, DropPath,
PatchMerging) that reproduces the released model (see ``tests/test_sifa_swin.py``).

Architecture (reference mode = the released code):

* A clip ``(B, C, T, H, W)`` is cut into ``T' = T / E`` tubelets of ``E`` frames (``E`` = ``early_stride``); a
  ``Conv3d(C, D, (E, P, P), stride (E, P, P))`` embeds each (no LayerNorm after it, unlike image Swin) and a
  Swin image model runs on the ``B·T'`` token maps.
* Every block of every stage is a SIFA block. After the window-attention residual, a block whose windows are
  **not shifted** adds ``LN_sifa(y)``, ``y`` being the SIFA operator on its tokens viewed as
  ``(B, C, T', H, W)`` (offsets fixed to zero as released, or learned with ``learn_offsets=True``); a block with
  **shifted** windows adds a temporal convolution (kernel 3 over ``T'``, no bias). Both start at zero
  (``LN_sifa`` weight and bias, conv weight). Then the usual MLP residual. "Shifted" is the *effective* shift:
  as in Swin, a window that covers the whole feature map is never shifted, so e.g. both blocks of the last
  stage at 224 px (7x7 map, window 7) are SIFA blocks.
* Head: per tubelet average pool → dropout → Linear, then the mean of the logits over ``T'``.

Parameters the released model holds but never uses: every official block owns both the temporal conv
(``conv``) and the SIFA norm (``tda_norm``) but uses only one of them. Each block here builds only the one it
uses (``sifa_norm`` in SIFA blocks, ``conv_t`` in temporal-conv blocks), so every parameter gets a gradient
(plain ``DistributedDataParallel`` works, optimisers hold no dead state). The official-checkpoint converter
(:func:`checkpoint_filter_fn`) drops the never-used official tensors and logs how many. Parameter counts at 400
classes are the official ones minus those tensors (:data:`NEVER_USED_OFFICIAL_TENSORS`, :data:`OFFICIAL_PARAMS`):
Swin-S 60,954,586 − 35 tensors (7,665,984 values) = 53,288,602; Swin-B 108,134,216 − 35 (13,625,088) =
94,509,128; Swin-L 242,785,828 − 35 (30,648,960) = 212,136,868 (most of it the unused ``3·C²`` temporal convs of
the SIFA blocks). The fixed ``1/C`` correlation constants of the
official code (``def_cor.weight``) are part of the operator (:func:`sifa_hub.ops.sifa_attention`), not parameters.

``c2d_swin_*`` twins (``use_sifa=False``) are the same tubelet-embedded frame-wise Swin without any temporal
modelling (the official ``c2d_swin_vit_*`` baselines).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import ClassifierHead, resize_rel_pos_bias_table, to_2tuple
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock, WindowAttention
from torch import nn

from ..layers import SIFA
from ._builder import build_sifa_model
from ._helpers import (
    adapt_stem_weight,
    check_output_fmt,
    check_state_dict,
    fit_classifier,
    inflate_conv_weight,
    unwrap_state_dict,
)
from ._pretrained import imagenet_cfgs
from ._validation import check_clip

__all__ = [
    "SifaSwinTransformer",
    "SifaSwinBlock",
    "SifaSwinStage",
    "TubeletEmbed",
    "checkpoint_filter_fn",
    "temporal_conv_residual",
]

_logger = logging.getLogger(__name__)


class TubeletEmbed(nn.Module):
    """Embed non-overlapping tubelets of ``E`` frames × ``P×P`` pixels.

    Args:
        in_chans: input channels C.
        embed_dim: output channels D.
        early_stride: temporal tubelet length E.
        patch_size: spatial patch size P.
        norm_layer: optional norm after the projection (the released model has none).
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        early_stride: int,
        patch_size: int,
        norm_layer: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        kernel = (early_stride, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, T/E, H/P, W/P, D)``: contiguous channels-last tokens, as timm's Swin stages
        expect (a permuted view would keep the first stage in the conv's channels-first memory order, where its
        LayerNorms, Linears and temporal path copy their inputs)."""
        x = self.proj(x)  # (B, D, T', H', W')
        return self.norm(x.permute(0, 2, 3, 4, 1).contiguous())  # (B, T', H', W', D)


def temporal_conv_residual(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x + conv_t(x)`` on channels-last tokens: the temporal conv (kernel 3 over T', zero padding 1, no bias) as
    three GEMMs over the channels, without the channels-first copies of ``nn.Conv3d``.

    ``y[t] = x[t] + W1·x[t] + W0·x[t-1] + W2·x[t+1]`` with ``W_k = weight[:, :, k, 0, 0]`` and ``x[-1] = x[T'] = 0``
    (``T' = 1`` uses only ``W1``). The products run in the dtype of ``F.linear`` (autocast's under autocast) and
    are added to ``x`` in the promoted dtype, as in ``x + conv_t(x)``.

    Args:
        x: tokens ``(B, T', H, W, C)``.
        weight: the ``nn.Conv3d`` weight ``(C, C, 3, 1, 1)``.

    Returns:
        ``(B, T', H, W, C)``.
    """
    w_prev, w_cur, w_next = weight.flatten(2).permute(2, 0, 1).contiguous()  # 3 x (C_out, C_in)
    z = F.linear(x, w_cur)
    y = x + z
    x = x.to(z.dtype)  # under autocast: one cast for both shifted GEMMs (not one per slice); else a no-op
    y[:, 1:].add_(_tokens_linear(x[:, :-1], w_prev))
    y[:, :-1].add_(_tokens_linear(x[:, 1:], w_next))
    return y


def _tokens_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear`` of tokens ``(..., C)`` as one 2-D GEMM. A time slice of a batch of clips is not contiguous, and
    ``F.linear`` would run it as a batched matmul against a copy of the weight per batch item (2-6x slower at batch
    4); flattening copies the slice once instead (and is a view at batch 1)."""
    return F.linear(x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], weight.shape[0])


class SifaSwinBlock(SwinTransformerBlock):
    """timm's Swin block plus the SIFA-Transformer temporal path, on ``(B, T', H, W, C)`` tokens.

    ``temporal_mode`` is ``"sifa"`` for blocks whose windows are not shifted (``x += LN_sifa(SIFA(x))``),
    ``"conv"`` for shifted ones (``x += conv_t(x)``, kernel 3 over T'), ``None`` without SIFA (C2D twin).
    Only the module of ``temporal_mode`` is built (``sifa`` + ``sifa_norm``, or ``conv_t``); the released blocks
    also held the other, never used (see the module docstring). Both temporal paths take the channels-last tokens
    as they are (no permute copies in the block): SIFA through :meth:`~sifa_hub.layers.SIFA.forward_channels_last`,
    the temporal conv as GEMMs (:func:`temporal_conv_residual`) with the weight ``(C, C, 3, 1, 1)`` of the
    ``nn.Conv3d`` ``conv_t``.

    Args:
        dim: channels C.
        input_resolution: token map size ``(H, W)``.
        num_heads: attention heads.
        window_size: attention window (clamped to the map as in timm / the released code).
        shift_size: window shift (0 or ``window_size // 2``); zeroed when the window covers the map.
        use_sifa: add the temporal path.
        learn_offsets: predict SIFA offsets with a zero-initialised conv (the paper); released: fixed zero.
        sifa_kernel_size: K of the SIFA neighbourhood.
        sifa_backend: operator backend for :class:`sifa_hub.layers.SIFA`.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias of the qkv projection.
        proj_drop: dropout after the attention / MLP projections.
        attn_drop: attention-weight dropout.
        drop_path: stochastic depth of the attention and MLP residuals.
        norm_layer: norm used everywhere (LayerNorm).
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        use_sifa: bool = True,
        learn_offsets: bool = False,
        sifa_kernel_size: int = 3,
        sifa_backend: str = "auto",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__(
            dim=dim,
            input_resolution=input_resolution,
            num_heads=num_heads,
            window_size=window_size,
            shift_size=shift_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=proj_drop,
            attn_drop=attn_drop,
            drop_path=drop_path,
            norm_layer=norm_layer,
        )
        self.temporal_mode: str | None = None
        self.sifa: SIFA | None = None
        self.sifa_norm: nn.Module | None = None
        self.conv_t: nn.Conv3d | None = None
        if use_sifa:
            # self.shift_size is the effective shift after timm's clamp of the window to the map
            self.temporal_mode = "conv" if any(self.shift_size) else "sifa"
            if self.temporal_mode == "sifa":
                self.sifa = SIFA(dim, kernel_size=sifa_kernel_size, learn_offsets=learn_offsets, backend=sifa_backend)
                self.sifa_norm = norm_layer(dim)
            else:
                self.conv_t = nn.Conv3d(dim, dim, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False)
            self.reset_temporal_parameters()

    def reset_temporal_parameters(self) -> None:
        """Zero the temporal path (SIFA norm, temporal conv, offset conv) so the block starts as plain Swin."""
        if self.sifa_norm is not None:
            for p in self.sifa_norm.parameters():
                nn.init.zeros_(p)
        if self.conv_t is not None:
            nn.init.zeros_(self.conv_t.weight)
        if self.sifa is not None and self.sifa.conv_offset is not None:
            nn.init.zeros_(self.sifa.conv_offset.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T', H, W, C)`` → ``(B, T', H, W, C)``."""
        if x.numel() == 0:
            return x  # empty batch: nothing to mix (timm's window attention cannot reshape 0 elements)
        B, T, H, W, C = x.shape
        x = x.reshape(B * T, H, W, C)
        x = x + self.drop_path1(self._attn(self.norm1(x)))  # (B·T', H, W, C)
        x = x.reshape(B, T, H, W, C)  # a view: the temporal path runs on the channels-last tokens
        if self.sifa is not None and self.sifa_norm is not None:  # temporal_mode "sifa"
            x = x + self.sifa_norm(self.sifa.forward_channels_last(x))
        elif self.conv_t is not None:  # temporal_mode "conv"
            x = temporal_conv_residual(x, self.conv_t.weight)
        x = x.reshape(B * T, H * W, C)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x.reshape(B, T, H, W, C)

    def extra_repr(self) -> str:
        return f"temporal_mode={self.temporal_mode}, window_size={self.window_size}, shift_size={self.shift_size}"


class SifaSwinStage(nn.Module):
    """One Swin stage on ``(B, T', H, W, C)`` tokens: timm ``PatchMerging`` (stages > 0), then the blocks.

    Args:
        dim: input channels.
        out_dim: output channels (``2·dim`` after a merge).
        input_resolution: token map size ``(H, W)`` before the merge.
        depth: number of blocks; even indices are unshifted, odd ones shifted.
        downsample: start with a 2x2 patch merge.
        num_heads: attention heads.
        window_size: attention window.
        drop_path: stochastic depth per block.
        norm_layer: norm of the patch merge and the blocks.
        block_kwargs: the remaining :class:`SifaSwinBlock` arguments.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        downsample: bool,
        num_heads: int,
        window_size: int,
        drop_path: list[float],
        norm_layer: type[nn.Module] = nn.LayerNorm,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        height, width = input_resolution
        self.output_resolution = ((height + 1) // 2, (width + 1) // 2) if downsample else (height, width)
        self.downsample = PatchMerging(dim, out_dim=out_dim, norm_layer=norm_layer) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                SifaSwinBlock(
                    out_dim,
                    self.output_resolution,
                    num_heads,
                    window_size=window_size,
                    shift_size=0 if i % 2 == 0 else window_size // 2,
                    drop_path=drop_path[i],
                    norm_layer=norm_layer,
                    **block_kwargs,
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T', H, W, C)`` → ``(B, T', H_out, W_out, C_out)``."""
        B, T = x.shape[:2]
        x = self.downsample(x.flatten(0, 1)).unflatten(0, (B, T))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


_POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


def _check_pool(global_pool: str | None, num_classes: int) -> None:
    """Refuse a head pooling that :class:`~timm.layers.ClassifierHead` cannot build or feed a classifier with."""
    if global_pool is not None and global_pool not in _POOL_TYPES:
        raise ValueError(f"SifaSwinTransformer: global_pool must be one of {_POOL_TYPES}, got {global_pool!r}")
    if global_pool == "" and num_classes > 0:
        raise ValueError("SifaSwinTransformer: global_pool='' (unpooled maps) needs num_classes=0 (no classifier)")


def _check_args(
    size: tuple[int, int],
    patch_size: int,
    embed_dim: int,
    depths: tuple[int, ...],
    num_heads: tuple[int, ...],
    num_frames: int,
    early_stride: int,
) -> list[int]:
    """Refuse constructor arguments :class:`SifaSwinTransformer` cannot build; return the stage widths."""
    if len(depths) != len(num_heads) or not depths:
        raise ValueError(f"depths {depths} and num_heads {num_heads} must be non-empty and of equal length")
    if early_stride < 1 or num_frames < early_stride or num_frames % early_stride:
        raise ValueError(f"num_frames ({num_frames}) must be a positive multiple of early_stride ({early_stride})")
    if size[0] % patch_size or size[1] % patch_size:
        raise ValueError(f"img_size {size} must be divisible by patch_size ({patch_size})")
    dims = [int(embed_dim * 2**i) for i in range(len(depths))]
    for d, h in zip(dims, num_heads):
        if d % h:
            raise ValueError(f"stage width {d} is not divisible by its number of heads {h}")
    return dims


class SifaSwinTransformer(nn.Module):
    """SIFA-Transformer (Swin family) for clips ``(B, C, T, H, W)``.

    Args:
        img_size: frame size (square int or ``(H, W)``); inputs must match it.
        patch_size: spatial tubelet size P.
        in_chans: input channels C.
        num_classes: classifier outputs; 0 for a feature extractor.
        num_frames: nominal clip length (the training setting, recorded for processors and model cards);
            any ``T`` that is a positive multiple of ``early_stride`` is accepted.
        early_stride: temporal tubelet length E; ``T' = T / E`` steps reach the SIFA blocks.
        embed_dim: channels D of the first stage (doubled at each merge).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window.
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: bias of the qkv projections.
        drop_rate: dropout before the classifier (``dropout_ratio`` of the official code).
        proj_drop_rate: dropout after attention / MLP projections (``drop_rate`` of the official code).
        attn_drop_rate: attention-weight dropout.
        drop_path_rate: stochastic depth, linear over all blocks.
        patch_norm: LayerNorm after the tubelet embedding; the released model has none (False), True keeps the
            one of 2D Swin weights when inflating them.
        use_sifa: SIFA blocks (True) or the C2D twin without temporal modelling (False).
        learn_offsets: learn SIFA offsets (zero-initialised conv, the paper); False = fixed zero (as released).
        sifa_kernel_size: K of the SIFA neighbourhood.
        sifa_backend: operator backend (see :func:`sifa_hub.ops.sifa_attention`).
        global_pool: spatial pooling of the head (``"avg"``).
        norm_layer: normalization layer.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 400,
        num_frames: int = 16,
        early_stride: int = 4,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = False,
        use_sifa: bool = True,
        learn_offsets: bool = False,
        sifa_kernel_size: int = 3,
        sifa_backend: str = "auto",
        global_pool: str = "avg",
        norm_layer: type[nn.Module] = nn.LayerNorm,
    ) -> None:
        super().__init__()
        size: tuple[int, int] = to_2tuple(img_size)
        depths, num_heads = tuple(depths), tuple(num_heads)
        dims = _check_args(size, patch_size, embed_dim, depths, num_heads, num_frames, early_stride)
        _check_pool(global_pool, num_classes)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = size
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.early_stride = early_stride
        self.use_sifa = use_sifa
        self.learn_offsets = learn_offsets
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = dims[-1]
        self.feature_info: list[dict[str, Any]] = []

        self.patch_embed = TubeletEmbed(
            in_chans, embed_dim, early_stride, patch_size, norm_layer=norm_layer if patch_norm else None
        )
        grid = (size[0] // patch_size, size[1] // patch_size)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu")  # linear over all blocks
        dpr = [r.tolist() for r in rates.split(depths)]
        stages = []
        in_dim, resolution = dims[0], grid
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            stage = SifaSwinStage(
                in_dim, dims[i], resolution, depth, downsample=i > 0, num_heads=heads, window_size=window_size,
                drop_path=dpr[i], norm_layer=norm_layer, use_sifa=use_sifa, learn_offsets=learn_offsets,
                sifa_kernel_size=sifa_kernel_size, sifa_backend=sifa_backend, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
            )  # fmt: skip
            stages.append(stage)
            in_dim, resolution = dims[i], stage.output_resolution
            self.feature_info.append({"num_chs": dims[i], "reduction": patch_size * 2**i, "module": f"layers.{i}"})
        self.layers = nn.Sequential(*stages)
        self.norm = norm_layer(self.num_features)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.init_weights()

    @torch.jit.ignore
    def init_weights(self) -> None:
        """(Re-)initialise every tensor: the one definition of the SIFA-Transformer's initialisation.

        Linear layers truncated normal (std 0.02, bias 0), LayerNorms 1 / 0, convs PyTorch's default, relative
        position tables truncated normal (std 0.02) and their index / mask buffers rebuilt, then the temporal path
        at zero (:meth:`SifaSwinBlock.reset_temporal_parameters`). Only ``torch.nn.init`` functions are used, so
        transformers' guard can skip tensors loaded from a checkpoint (the hf adapter delegates here).
        """
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
                m.reset_parameters()
            elif isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
            init_buffers = getattr(m, "init_non_persistent_buffers", None)
            if callable(init_buffers):  # timm's attention index / mask buffers
                init_buffers()
        for m in self.modules():
            if isinstance(m, SifaSwinBlock):
                m.reset_temporal_parameters()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Relative position bias tables (norms and biases are 1-D: timm's optimizer factory skips them)."""
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        fine = [(r"^layers\.(\d+)\.downsample", (0,)), (r"^layers\.(\d+)\.\w+\.(\d+)", None), (r"^norm", (99999,))]
        return {"stem": r"^patch_embed", "blocks": r"^layers\.(\d+)" if coarse else fine}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            if isinstance(stage, SifaSwinStage):
                stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (``num_classes=0``: ``forward`` returns pooled features ``(B, C)``)."""
        _check_pool(global_pool if global_pool is not None else self.global_pool, num_classes)
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool, in_features=self.num_features)
        self.head_hidden_size = self.head.num_features
        if global_pool is not None:
            self.global_pool = global_pool

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``TypeError``/``ValueError`` naming the problem if ``x`` is not a ``(B, C, T, H, W)`` clip.

        Checks the type and dtype (a float tensor of the weights' dtype: integer frames must be converted and
        normalised first), finite values, then the layout, channels, clip length and frame size.
        """
        check_clip(x, self, self.patch_embed.proj.weight)
        if x.dim() != 5:
            raise ValueError(
                f"{type(self).__name__} expects a clip of shape (B, C, T, H, W), got a {x.dim()}-D tensor "
                f"of shape {tuple(x.shape)}"
            )
        _, chans, frames, height, width = x.shape
        if chans != self.in_chans:
            hint = "; it looks like (B, T, C, H, W): use x.permute(0, 2, 1, 3, 4)" if frames == self.in_chans else ""
            raise ValueError(
                f"{type(self).__name__} expects (B, C={self.in_chans}, T, H, W), got shape {tuple(x.shape)}{hint}"
            )
        if frames < self.early_stride or frames % self.early_stride:
            raise ValueError(
                f"clip length T={frames} must be a positive multiple of early_stride={self.early_stride} "
                f"(tubelets of {self.early_stride} frames)"
            )
        if (height, width) != self.img_size:
            raise ValueError(
                f"frame size {height}x{width} does not match the model's img_size "
                f"{self.img_size[0]}x{self.img_size[1]} (build it with img_size=({height}, {width}); "
                f"H and W must be multiples of patch_size={self.patch_size})"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → normalised last-stage features ``(B, C_out, T', H', W')``."""
        self.check_input(x)
        x = self.patch_embed(x)  # (B, T', H/P, W/P, D)
        x = self.layers(x)  # (B, T', H', W', C_out)
        x = self.norm(x)
        return x.permute(0, 4, 1, 2, 3)  # (B, C_out, T', H', W')

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Per-tubelet pool → dropout → Linear, then the mean over T'.

        Args:
            x: ``(B, C, T', H', W')`` from :meth:`forward_features`.
            pre_logits: return the pooled features ``(B, C)`` (mean over T' of the per-tubelet features after
                dropout; ``get_classifier()`` of them equals the logits).

        Returns:
            ``(B, num_classes)`` logits, or ``(B, C)`` with ``pre_logits`` or ``num_classes=0``; with
            ``global_pool=""`` the unpooled ``(B, C, T', H', W')``.
        """
        B, T = x.shape[0], x.shape[2]
        y = self.head(x.transpose(1, 2).flatten(0, 1), pre_logits=pre_logits)  # per tubelet (B·T', ...)
        y = y.unflatten(0, (B, T))
        if y.dim() > 3:  # no global pooling: (B, T', C, H', W')
            return y.transpose(1, 2)
        return y.mean(1)  # (B, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``(B, num_classes)`` logits."""
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCTHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (timm's ``forward_intermediates`` contract).

        Args:
            x: ``(B, C, T, H, W)`` clip.
            indices: take the last n stages if int, all if None, or these stage indices.
            norm: apply the final norm to the last stage's output.
            stop_early: stop after the last requested stage.
            output_fmt: only ``"NCTHW"``: maps ``(B, C_i, T', H_i, W_i)`` (any other value is refused with a
                message; per-tubelet image maps are ``m.transpose(1, 2).flatten(0, 1)``).
            intermediates_only: return only the intermediates.

        Returns:
            The intermediates, or ``(final features (B, C_out, T', H', W'), intermediates)``.
        """
        check_output_fmt(self, output_fmt)
        self.check_input(x)
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        stages = self.layers if torch.jit.is_scripting() or not stop_early else self.layers[: max_index + 1]
        num_stages = len(self.layers)
        intermediates = []
        x = self.patch_embed(x)  # (B, T', H, W, D)
        i = 0
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                feat = self.norm(x) if norm and i == num_stages - 1 else x
                intermediates.append(feat.permute(0, 4, 1, 2, 3).contiguous())  # (B, C_i, T', H_i, W_i)
        if intermediates_only:
            return intermediates
        if i == num_stages - 1:
            x = self.norm(x)
        return x.permute(0, 4, 1, 2, 3), intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop stages (and norm / head) not needed for the requested intermediates."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        prune_end = max_index < len(self.layers) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        self.layers = self.layers[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


_OFFICIAL_CONSTANTS = ("relative_position_index", "attn_mask", "def_cor.weight")
_TEMPORAL_KEYS = (".sifa_norm.", ".conv_t.")
_BLOCK_TEMPORAL = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(sifa_norm|conv_t)\.")
# The released blocks hold both temporal modules and use one: tensors the converter drops (35 in S/B/L at 224 px:
# 13 SIFA blocks with an unused conv, 11 temporal-conv blocks with an unused norm weight and bias) and the
# official trainable parameter counts at 400 classes (ours = official minus the dropped tensors' values).
NEVER_USED_OFFICIAL_TENSORS = {"small": 35, "base": 35, "large": 35}
OFFICIAL_PARAMS = {"small": 60_954_586, "base": 108_134_216, "large": 242_785_828}
PARAMS = {"small": 53_288_602, "base": 94_509_128, "large": 212_136_868}  # ours: official minus the never-used


def _never_used(key: str, model: SifaSwinTransformer) -> bool:
    """Whether ``key`` (converted name) is a released temporal tensor that ``model``'s block does not use."""
    m = _BLOCK_TEMPORAL.match(key)
    if m is None or int(m.group(1)) >= len(model.layers):
        return False
    stage = model.layers[int(m.group(1))]
    if not isinstance(stage, SifaSwinStage) or int(m.group(2)) >= len(stage.blocks):
        return False
    block = stage.blocks[int(m.group(2))]
    mode = getattr(block, "temporal_mode", None)
    return (mode == "sifa" and m.group(3) == "conv_t") or (mode == "conv" and m.group(3) == "sifa_norm")


_CLASSIFIER_KEYS = ("head.fc.weight", "head.fc.bias")


def checkpoint_filter_fn(
    state_dict: Mapping[str, Any], model: SifaSwinTransformer, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Convert a checkpoint to ``model``'s keys and shapes; raise a readable report on any mismatch.

    Accepted sources:

    * this module's own state dicts (pass through);
    * official SIFA-Transformer / C2D-Swin checkpoints (``.pth``, optional ``module.`` prefix): patch merging
      moves from the end of stage i to the start of stage i+1, ``fc`` → ``head.fc``, ``tda_norm`` →
      ``sifa_norm``, ``conv.weight (C, C, 1, 3)`` → ``conv_t.weight (C, C, 3, 1, 1)``; each block's never-used
      temporal module (``conv`` of a SIFA block, ``tda_norm`` of a temporal-conv block) is dropped (logged with
      the count, :data:`NEVER_USED_OFFICIAL_TENSORS`); the fixed ``def_cor``
      (1/C) tensors and the ``relative_position_index`` / ``attn_mask`` buffers are dropped;
    * 2D ImageNet Swin weights (timm ``swin_*_patch4_window7_224`` or Microsoft's originals): the patch
      embedding ``(D, C, P, P)`` is inflated to ``(D, C, E, P, P)`` with the 2D kernel at ``E // 2`` and zeros
      elsewhere, relative position tables are resized when the window differs, and the temporal path
      (``sifa_norm``, ``conv_t``, offset convs) is set to its zero initialisation.

    Also: offset convs absent from a checkpoint with fixed offsets start at zero (= the released behaviour);
    a classifier that fits the model loads whatever the registered ``num_classes``; one that does not is dropped
    and ``head.fc`` keeps the model's weights (a WARNING naming ``source`` and both shapes; dropped quietly for a
    model built with ``num_classes=0``); a patch embedding with other input channels is adapted as timm adapts
    image stems; the 2D patch-embedding norm is dropped (warning) when the model has ``patch_norm=False``.
    Anything else missing, unexpected or mis-shaped raises
    :class:`~sifa_hub.models._helpers.CheckpointMismatchError`.

    Args:
        state_dict: the checkpoint (containers and a ``module.`` prefix are unwrapped).
        model: the model to load into.
        source: the checkpoint's name in messages (the builder passes the file path).
    """
    state = unwrap_state_dict(state_dict)
    own = model.state_dict()
    official = any(k.startswith("layers.0.downsample.") for k in state) or "fc.weight" in state
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith(_OFFICIAL_CONSTANTS):
            continue  # fixed constants / buffers the model rebuilds
        if official:
            k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k)
            k = re.sub(r"^(fc|head)\.(weight|bias)$", r"head.fc.\2", k)
        k = k.replace(".tda_norm.", ".sifa_norm.")
        if re.fullmatch(r"layers\.\d+\.blocks\.\d+\.conv\.weight", k):
            k = k.replace(".conv.weight", ".conv_t.weight")
            if v.dim() == 4:  # official Conv2d (C, C, 1, 3) over (N, C, H·W, T') → Conv3d (C, C, 3, 1, 1)
                v = v[:, :, 0, :, None, None]
        if k == "patch_embed.proj.weight" and v.dim() == 4:
            v = inflate_conv_weight(v, time=model.early_stride, center=True)
        if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
            attn = model.get_submodule(k.rsplit(".", 1)[0])
            assert isinstance(attn, WindowAttention)
            v = resize_rel_pos_bias_table(v, new_window_size=attn.window_size, new_bias_shape=own[k].shape)
        out[k] = v
    _drop_never_used(out, model, source)

    for k in (patch_norm_keys := [k for k in out if k.startswith("patch_embed.norm.") and k not in own]):
        del out[k]
    if patch_norm_keys:
        warnings.warn(
            "checkpoint has a patch-embedding LayerNorm but the model was built with patch_norm=False (as the "
            "released SIFA-Transformer): dropping " + ", ".join(patch_norm_keys),
            stacklevel=2,
        )

    fit_classifier(out, own, _CLASSIFIER_KEYS, source)
    stem = out.get("patch_embed.proj.weight")
    if stem is not None and stem.dim() == 5:
        out["patch_embed.proj.weight"] = adapt_stem_weight(stem, model.in_chans)

    _zero_fill_temporal(out, own)
    check_state_dict(model, out, source=f"{source} (after conversion)")
    return out


def _zero_fill_temporal(out: dict[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> None:
    """Give (in place) a checkpoint without a temporal path (2D weights) or without offset convs (released fixed
    offsets) those tensors at their zero initialisation."""
    has_temporal = any(t in k for k in out for t in _TEMPORAL_KEYS)
    has_offsets = any(".sifa.conv_offset." in k for k in out)
    filled = []
    for k, v in own.items():
        if k in out:
            continue
        if (any(t in k for t in _TEMPORAL_KEYS) and not has_temporal) or (
            ".sifa.conv_offset." in k and not has_offsets
        ):
            out[k] = torch.zeros_like(v)
            filled.append(k)
    if filled:
        _logger.info("zero-initialised %d temporal-path tensors absent from the checkpoint", len(filled))


def _drop_never_used(out: dict[str, torch.Tensor], model: SifaSwinTransformer, source: str) -> None:
    """Drop (in place) the released blocks' temporal tensors that ``model``'s blocks do not build, and say so."""
    unused = [k for k in out if _never_used(k, model)]
    for k in unused:
        del out[k]
    if unused:
        _logger.info(
            "%s: dropped %d never-used tensors of the released layout (the temporal conv of SIFA blocks, the SIFA "
            "norm of temporal-conv blocks)",
            source,
            len(unused),
        )


def _create_sifa_swin(variant: str, pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """Build through :func:`~sifa_hub.models._builder.build_sifa_model` (safe weight loading, video features)."""
    out_indices = kwargs.pop("out_indices", tuple(range(len(kwargs.get("depths", (2, 2, 6, 2))))))
    return build_sifa_model(
        SifaSwinTransformer,
        variant,
        pretrained,
        checkpoint_filter_fn,
        feature_cfg={"out_indices": out_indices},
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 400,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2206.06931",
        **kwargs,
    }


# Weight tags (models/_pretrained.py): every Swin size has the ImageNet initialisations of timm's matching
# swin_* repositories (ms_in1k and ms_in22k; large: ms_in22k); the first is the variant's default.
_swin_cfgs: dict[str, Any] = {}
for _prefix in ("sifa", "c2d"):
    for _size in ("tiny", "small", "base", "large"):
        _name = f"swin_{_size}_patch4_window7_224"
        _swin_cfgs.update(imagenet_cfgs(f"{_prefix}_{_name}", _name, _cfg()))
    _swin_cfgs[f"{_prefix}_swin_pico"] = _cfg(input_size=(3, 32, 32), pool_size=(8, 8))
default_cfgs = generate_default_cfgs(_swin_cfgs)

# Variants. Stochastic depth as in the official constructors (S 0.3, B/L 0.5; T 0.2 as Swin-T).
# pico (CPU-sized): 8 frames -> T'=4 tubelets of 2 frames; 32 px / patch 2 -> 16x16 then 8x8 tokens with window 4, so
# each stage holds one SIFA (unshifted) and one temporal-conv (shifted) block; also runs at 64 px (img_size=64).
# Each C2D twin is its SIFA variant with ``use_sifa=False``: one table, used by both.
_SWIN_ARGS: dict[str, dict[str, Any]] = {
    "tiny": {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.2},
    "small": {"embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.3},
    "base": {"embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32), "drop_path_rate": 0.5},
    "large": {"embed_dim": 192, "depths": (2, 2, 18, 2), "num_heads": (6, 12, 24, 48), "drop_path_rate": 0.5},
    "pico": {
        "embed_dim": 32,
        "depths": (2, 2),
        "num_heads": (2, 4),
        "window_size": 4,
        "patch_size": 2,
        "early_stride": 2,
        "num_frames": 8,
        "drop_path_rate": 0.0,
    },
}


def _swin(variant: str, size: str, pretrained: bool, kwargs: dict[str, Any]) -> SifaSwinTransformer:
    model_args = dict(_SWIN_ARGS[size], use_sifa=variant.startswith("sifa_"))
    return _create_sifa_swin(variant, pretrained, **dict(model_args, **kwargs))


@register_model
def sifa_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """SIFA-Transformer Swin-T (our addition), 16 frames, 224 px."""
    return _swin("sifa_swin_tiny_patch4_window7_224", "tiny", pretrained, kwargs)


@register_model
def sifa_swin_small_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """SIFA-Transformer Swin-S (official ``c2d_sifa_swin_vit_s_p4_w7``), 16 frames, 224 px."""
    return _swin("sifa_swin_small_patch4_window7_224", "small", pretrained, kwargs)


@register_model
def sifa_swin_base_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """SIFA-Transformer Swin-B (official ``c2d_sifa_swin_vit_b_p4_w7``), 16 frames, 224 px."""
    return _swin("sifa_swin_base_patch4_window7_224", "base", pretrained, kwargs)


@register_model
def sifa_swin_large_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """SIFA-Transformer Swin-L (official ``c2d_sifa_swin_vit_l_p4_w7``), 16 frames, 224 px."""
    return _swin("sifa_swin_large_patch4_window7_224", "large", pretrained, kwargs)


@register_model
def sifa_swin_pico(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """CPU-sized SIFA-Transformer: D=32, depths (2, 2), 8-frame 32 px clips in 2x2x2 tubelets."""
    return _swin("sifa_swin_pico", "pico", pretrained, kwargs)


@register_model
def c2d_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """C2D Swin-T: the frame-wise twin of ``sifa_swin_tiny_patch4_window7_224``."""
    return _swin("c2d_swin_tiny_patch4_window7_224", "tiny", pretrained, kwargs)


@register_model
def c2d_swin_small_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """C2D Swin-S (official ``c2d_swin_vit_s_p4_w7``)."""
    return _swin("c2d_swin_small_patch4_window7_224", "small", pretrained, kwargs)


@register_model
def c2d_swin_base_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """C2D Swin-B (official ``c2d_swin_vit_b_p4_w7``)."""
    return _swin("c2d_swin_base_patch4_window7_224", "base", pretrained, kwargs)


@register_model
def c2d_swin_large_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """C2D Swin-L (official ``c2d_swin_vit_l_p4_w7``)."""
    return _swin("c2d_swin_large_patch4_window7_224", "large", pretrained, kwargs)


@register_model
def c2d_swin_pico(pretrained: bool = False, **kwargs: Any) -> SifaSwinTransformer:
    """C2D twin of ``sifa_swin_pico``."""
    return _swin("c2d_swin_pico", "pico", pretrained, kwargs)
