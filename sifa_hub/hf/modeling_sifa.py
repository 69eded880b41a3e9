"""transformers models for SIFA video backbones: thin adapters around the timm models of ``sifa_hub.models``.

The network is defined once, in ``sifa_hub/models`` (timm). :class:`SifaModel` and
:class:`SifaForVideoClassification` hold the module ``timm.create_model(config.architecture, ...)`` builds as
``self.timm_model`` and own no layer of their own. Checkpoints keep timm's native keys: ``model.safetensors``
written by ``save_pretrained`` holds ``conv1.weight``, ``layer4.0...`` (not ``timm_model.conv1.weight``), so
``timm.create_model(architecture, pretrained=True, pretrained_cfg_overlay=dict(file=".../model.safetensors"))``
and ``timm.create_model("local-dir:<dir>")`` load the same file. The ``timm_model.`` prefix is added on load and
removed on save by a transformers checkpoint-conversion rule (``PrefixChange``) registered for ``model_type="sifa"``.

Key mapping between the two views: ``hf_key == "timm_model." + timm_key``; :meth:`SifaPreTrainedModel.from_timm`
and :meth:`SifaPreTrainedModel.to_timm` convert without copying.

Inputs follow VideoMAE / TimeSformer: ``pixel_values`` is ``(B, T, C, H, W)``; it is permuted to timm's
``(B, C, T, H, W)``.

SIFA-Net (ResNet family) has two classifiers, ``fc`` on layer4 and ``fc_dual`` on the temporally pooled
layer4_dual. :class:`SifaForVideoClassification` returns

* ``logits = log((softmax(a) + softmax(b)) / 2)``: the log of the reference prediction, so ``softmax(logits)`` is
  the official two-head inference output (and the video-classification pipeline's scores);
* ``head_logits = (a, b)``: the raw logits of both heads;
* ``loss = CE(a) + CE(b)`` with integer ``labels`` (the reference objective, :meth:`SifaResNet.loss`).

Those are single-label classification (the reference). With ``config.problem_type`` set to
``"multi_label_classification"`` or ``"regression"`` (or ``num_labels=1``), ``logits = (a + b) / 2`` and ``loss``
is transformers' loss of that problem type on each head, summed.

The Swin family has one head: ``logits`` are timm's logits (mean over tubelets) and ``loss`` is transformers'
classification loss.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import PrefixChange
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from ..models._helpers import CheckpointMismatchError
from ..models.sifa_resnet import SifaResNet, combine_heads
from ..models.sifa_swin import SifaSwinTransformer
from .configuration_sifa import SifaConfig

__all__ = [
    "SifaForVideoClassification",
    "SifaModel",
    "SifaModelOutput",
    "SifaPreTrainedModel",
    "SifaVideoClassifierOutput",
]

TIMM_PREFIX = "timm_model"
TimmSifaModel = SifaResNet | SifaSwinTransformer  # the timm models this wrapper adapts

# checkpoints hold timm-native keys; the model's keys are "timm_model.<timm key>"
register_checkpoint_conversion_mapping("sifa", [PrefixChange(prefix_to_add=TIMM_PREFIX)], overwrite=True)


@dataclass
class SifaModelOutput(BaseModelOutputWithPooling):
    r"""Output of :class:`SifaModel`.

    last_hidden_state (`torch.FloatTensor` of shape `(B, C, T', H', W')`):
        Final feature map of the backbone (SIFA-Net: layer4; Swin: the normalised last stage). ``T'`` is the
        number of time steps after the early (temporal) stride.
    pooler_output (`torch.FloatTensor` of shape `(B, D)`):
        Pooled features fed to the classifier(s): Swin ``D = C`` (mean over tubelets); SIFA-Net ``D = 2C``, the
        pooled main and dual branches concatenated (main first).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Per-stage maps ``(B, C_i, T_i, H_i, W_i)`` from timm's ``forward_intermediates`` (SIFA-Net: stem and
        layer1-4; Swin: the stages), returned with ``output_hidden_states=True``.
    dual_hidden_state (`torch.FloatTensor` of shape `(B, C, T'/2, 2H', 2W')`, *optional*):
        SIFA-Net only: the final map of the dual (temporally pooled) branch.
    """

    dual_hidden_state: torch.FloatTensor | None = None


@dataclass
class SifaVideoClassifierOutput(ImageClassifierOutput):
    r"""Output of :class:`SifaForVideoClassification`.

    loss (`torch.FloatTensor` of shape `()`, *optional*):
        Classification loss (SIFA-Net with integer labels: ``CE(a) + CE(b)``), returned when ``labels`` are given.
    logits (`torch.FloatTensor` of shape `(B, num_labels)`):
        Scores whose softmax is the prediction (SIFA-Net: ``log((softmax(a) + softmax(b)) / 2)``).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Per-stage maps, as in :class:`SifaModelOutput`.
    head_logits (`tuple(torch.FloatTensor)`, *optional*):
        SIFA-Net only: raw logits ``(a, b)`` of the main (layer4) and dual (layer4_dual) heads.
    """

    head_logits: tuple[torch.FloatTensor, torch.FloatTensor] | None = None


def _entrypoints() -> dict[str, Callable[..., nn.Module]]:
    """Variant name → its ``@register_model`` function in the model modules this adapter was built with.

    Looked up here, not in timm's global registry: that may hold another copy of the same names (an installed
    sifa_hub next to a remote-code folder, or two remote-code folders), and the adapter must build its own classes.
    """
    table: dict[str, Callable[..., nn.Module]] = {}
    for family in (SifaResNet, SifaSwinTransformer):
        module = sys.modules[family.__module__]
        table.update((name, getattr(module, name)) for name in module.default_cfgs)
    return table


def _is_weight_tag(name: Any) -> bool:
    """Whether ``name`` is a registered SIFA weight tag (``sifa_resnet50.a1_in1k``) rather than a folder or Hub id."""
    import timm

    if not isinstance(name, str) or "/" in name or os.path.exists(name):
        return False
    return name.startswith(("sifa_", "c2d_")) and name in timm.list_models(name.split(".")[0], pretrained=True)


def _check_weight_tag_name(name: Any) -> None:
    """Refuse ``<SIFA variant>.<tag>`` with an unregistered tag here: it is no Hub id (those hold a ``/``)."""
    import timm

    if not isinstance(name, str) or "/" in name or "." not in name or os.path.exists(name):
        return
    variant = name.split(".")[0]
    if variant in _entrypoints():
        tags = timm.list_pretrained(variant) or ["(none)"]
        raise ValueError(f"unknown weight tag {name!r}; registered tags of {variant}: {', '.join(tags)}")


def _safetensors_error_type() -> type[Exception]:
    from safetensors import SafetensorError

    return cast(type[Exception], SafetensorError)


def _create_timm_model(config: SifaConfig, num_classes: int) -> TimmSifaModel:
    """The timm model of ``config.architecture`` (as ``timm.create_model(..., num_classes=...,
    **config.timm_kwargs())``), with clear errors."""
    entrypoints = _entrypoints()
    if config.architecture not in entrypoints:
        known = sorted(entrypoints)
        raise ValueError(f"unknown SIFA architecture {config.architecture!r}; registered variants: {known}")
    kwargs = config.timm_kwargs()
    try:
        model = entrypoints[config.architecture](pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise type(e)(f"cannot build {config.architecture} from the config (create_model kwargs {kwargs}): {e}") from e
    if not isinstance(model, (SifaResNet, SifaSwinTransformer)):
        raise TypeError(f"{config.architecture} is not a SIFA model (got {type(model).__name__})")
    return model


def _named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Parameters and buffers (non-persistent ones included) by name."""
    return [*module.named_parameters(), *module.named_buffers()]


def _mark_initialized(module: nn.Module) -> None:
    """Flag every tensor as initialised so transformers' ``post_init`` keeps timm's initialisation."""
    for tensor in (*module.parameters(), *module.buffers()):
        setattr(tensor, "_is_hf_initialized", True)  # the flag transformers' init guards read


class SifaPreTrainedModel(PreTrainedModel):
    """Base class: config class, weight (re)initialisation, checkpoint checks, gradient checkpointing, timm
    conversion."""

    config_class = SifaConfig
    config: SifaConfig
    base_model_prefix = TIMM_PREFIX
    main_input_name = "pixel_values"
    input_modalities = "video"
    supports_gradient_checkpointing = True
    # the whole timm network stays on one device (its heads and residuals mix tensors of several children)
    _no_split_modules = ["SifaResNet", "SifaSwinTransformer"]
    model_tags = ["timm", "sifa", "video-classification"]
    # used in Trainer to avoid passing `num_items_in_batch` to forward
    accepts_loss_kwargs = False
    timm_model: TimmSifaModel
    gradient_checkpointing: bool = False

    def _init_timm_model(self, timm_model: TimmSifaModel | None, num_classes: int) -> None:
        """Build (or adopt) the timm model; keep timm's initialisation of a freshly built one."""
        if timm_model is None:
            timm_model = _create_timm_model(self.config, num_classes)
        elif not isinstance(timm_model, (SifaResNet, SifaSwinTransformer)):
            raise TypeError(f"expected a SIFA timm model (SifaResNet / SifaSwinTransformer), got {type(timm_model)}")
        self.timm_model = timm_model
        if not self.config.pretrained_cfg:  # record timm's metadata (crop_pct, interpolation, ...) for config.json
            self.config.pretrained_cfg = SifaConfig.from_timm_model(timm_model).pretrained_cfg
        # save timm-native keys also from a model not made by from_pretrained (which sets this itself)
        self._weight_conversions = [PrefixChange(prefix_to_add=TIMM_PREFIX)]
        if next(timm_model.parameters()).device.type != "meta":
            _mark_initialized(timm_model)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the tensors a checkpoint did not provide as the timm model itself does.

        transformers calls this bottom-up for every module after ``from_pretrained`` (which builds the model on the
        meta device); tensors loaded from the checkpoint carry ``_is_hf_initialized``. The timm model is the unit:
        its missing tensors (a new classifier, zero-initialised temporal paths, BN statistics, Swin's
        non-persistent index/mask buffers) are copied from a fresh ``_create_timm_model`` of the same config, so the
        initialisation rules live only in ``sifa_hub/models``. A fresh model (``__init__``) has nothing to do.
        """
        if module is not self.timm_model:
            return
        missing = [(n, t) for n, t in _named_tensors(module) if not getattr(t, "_is_hf_initialized", False)]
        if not missing:
            return
        fresh = dict(_named_tensors(_create_timm_model(self.config, module.num_classes)))
        for name, tensor in missing:
            tensor.copy_(fresh[name])

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        # transformers' own version skips a module whose direct tensors are all loaded (remote code), which would
        # skip the timm model: it owns no direct tensor
        if getattr(module, "_is_hf_initialized", False):
            return
        self._init_weights(module)
        setattr(module, "_is_hf_initialized", True)

    def _set_gradient_checkpointing(self, enable: bool = True, *args: Any, **kwargs: Any) -> None:
        """Delegate to timm's ``set_grad_checkpointing`` (``checkpoint_seq`` over the blocks)."""
        self.timm_model.set_grad_checkpointing(enable)
        self.gradient_checkpointing = enable

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """Accept timm-native keys too (e.g. ``Trainer`` resuming from a ``model.safetensors``)."""
        prefix = TIMM_PREFIX + "."
        state_dict = {k if k.startswith(prefix) else prefix + k: v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """transformers' ``from_pretrained``, raising :class:`CheckpointMismatchError` (a ``ValueError``) when the
        weights do not fit the config's architecture.

        Allowed differences: the classifier(s) missing from a backbone checkpoint (initialised) or present in a
        checkpoint loaded into :class:`SifaModel` (ignored). With ``ignore_mismatched_sizes=True`` mis-shaped
        tensors are re-initialised (e.g. a new ``num_labels``). Pass ``strict=False`` to only warn.
        """
        if _is_weight_tag(pretrained_model_name_or_path):
            return cls._from_weight_tag(pretrained_model_name_or_path, **kwargs)
        _check_weight_tag_name(pretrained_model_name_or_path)
        strict = kwargs.pop("strict", True)
        want_info = kwargs.pop("output_loading_info", False)
        ignore_mismatched = kwargs.pop("ignore_mismatched_sizes", False)
        try:
            model, info = cast(Any, super()).from_pretrained(
                pretrained_model_name_or_path,
                *model_args,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                **kwargs,
            )
        except _safetensors_error_type() as e:
            raise ValueError(
                f"{pretrained_model_name_or_path!s}: the weights file is not a valid safetensors file ({e}); "
                "re-download or re-export it"
            ) from None
        classifier = tuple(f"{TIMM_PREFIX}.{name}." for name in model._classifier_names())
        missing = sorted(k for k in info["missing_keys"] if not k.startswith(classifier))
        unexpected = sorted(k for k in info["unexpected_keys"] if not k.startswith(classifier))
        mismatched = [] if ignore_mismatched else sorted(str(m) for m in info["mismatched_keys"])
        if strict and (missing or unexpected or mismatched):
            lines = [
                f"the weights in {pretrained_model_name_or_path!s} do not match {type(model).__name__} built from its "
                f"config (architecture={model.config.architecture!r}, model_args={model.config.model_args}):"
            ]
            for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
                if keys:
                    shown = ", ".join(keys[:8]) + (f", ... ({len(keys) - 8} more)" if len(keys) > 8 else "")
                    lines.append(f"  {len(keys)} {title}: {shown}")
            lines.append(
                "  Fix config.json's architecture / model_args, pass ignore_mismatched_sizes=True for a new "
                "classifier size, or strict=False to load anyway."
            )
            raise CheckpointMismatchError("\n".join(lines))
        return (model, info) if want_info else model

    @classmethod
    def _from_weight_tag(
        cls, name: str, num_labels: int | None = None, id2label: Mapping[int, str] | None = None, **kwargs: Any
    ) -> Any:
        """A registered weight tag (``sifa_resnet50.a1_in1k``): timm downloads and converts the weights (the same
        path as ``timm.create_model(name, pretrained=True)``), wrapped without a copy. ``num_labels`` sets the
        classifier size; other keyword arguments go to the timm constructor (``num_frames``, ``drop_path_rate``)."""
        import timm

        for flag in ("ignore_mismatched_sizes", "strict", "trust_remote_code"):
            kwargs.pop(flag, None)
        if id2label is not None:
            num_labels = len(id2label) if num_labels is None else num_labels
        if num_labels is not None:
            kwargs["num_classes"] = num_labels
        timm_model = cast(TimmSifaModel, timm.create_model(name, pretrained=True, **kwargs))
        stored = cast(dict[str, Any], timm_model.pretrained_cfg).get("label_names") or ()
        labels = [id2label[i] for i in range(len(id2label))] if id2label is not None else None
        if labels is None and len(stored) == timm_model.num_classes:
            labels = list(stored)
        return cls.from_timm(timm_model, labels=labels)

    def _classifier_names(self) -> tuple[str, ...]:
        names = getattr(self.timm_model, "pretrained_cfg", {}).get("classifier") or ()
        return (names,) if isinstance(names, str) else tuple(names)

    def to_timm(self) -> TimmSifaModel:
        """The wrapped timm model (the same module, no copy); its ``state_dict()`` is the checkpoint's."""
        return self.timm_model

    @classmethod
    def from_timm(cls, timm_model: TimmSifaModel, labels: list[str] | None = None, **config_kwargs: Any) -> Any:
        """Wrap a model built by ``timm.create_model("sifa_*" / "c2d_*", ...)`` (no copy: weights are shared).

        Args:
            timm_model: the timm model.
            labels: class names (``id2label``); their number must equal the model's ``num_classes``.
            config_kwargs: further :class:`SifaConfig` fields.
        """
        if labels is not None:
            labels = list(labels)
            if len(labels) != timm_model.num_classes:
                raise ValueError(f"{len(labels)} labels for a model with num_classes={timm_model.num_classes}")
            config_kwargs["id2label"] = dict(enumerate(labels))
        config = SifaConfig.from_timm_model(timm_model, **config_kwargs)
        return cls(config, timm_model=timm_model)

    def _timm_input(self, pixel_values: torch.Tensor, output_attentions: bool | None) -> torch.Tensor:
        """Check ``pixel_values`` ``(B, T, C, H, W)`` and return timm's ``(B, C, T, H, W)`` in the weights' dtype.

        Raises:
            TypeError: not a tensor, or not floating point (raw ``uint8`` frames must go through the processor).
            ValueError: wrong rank or layout, a clip length or frame size the model cannot take, NaN/Inf values.
        """
        if output_attentions:
            raise ValueError(f"{type(self).__name__} cannot return attention maps (output_attentions=True)")
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor (B, T, C, H, W), got {type(pixel_values).__name__}")
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values has dtype {pixel_values.dtype}: SIFA models take normalised float clips. Use the "
                "video processor (AutoVideoProcessor.from_pretrained(...), SifaVideoProcessor), or convert and "
                "normalise yourself: (pixel_values.float() / 255 - mean) / std with config.image_mean / image_std"
            )
        c = self.config.num_channels
        if pixel_values.dim() != 5:
            raise ValueError(f"pixel_values must be (B, T, C, H, W), got a {pixel_values.dim()}-D tensor")
        if pixel_values.shape[2] != c:
            hint = (
                "; it looks like (B, C, T, H, W): pass pixel_values.permute(0, 2, 1, 3, 4)"
                if pixel_values.shape[1] == c
                else ""
            )
            raise ValueError(f"pixel_values must be (B, T, C={c}, H, W), got shape {tuple(pixel_values.shape)}{hint}")
        if not torch.compiler.is_compiling() and not torch.isfinite(pixel_values).all():
            raise ValueError(f"pixel_values: input clip contains NaN/Inf (shape {tuple(pixel_values.shape)})")
        # a float clip of another precision (float64, float16, ...) is cast to the weights' dtype
        x = pixel_values.to(device=self.device, dtype=self.dtype).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
        try:
            self.timm_model.check_input(x)
        except ValueError as e:
            raise ValueError(f"pixel_values of shape {tuple(pixel_values.shape)} (B, T, C, H, W): {e}") from None
        return x

    def _features(
        self, x: torch.Tensor, output_hidden_states: bool | list[int] | None
    ) -> tuple[Any, tuple[torch.Tensor, ...] | None]:
        """timm features (tensor, or SIFA-Net's ``(main, dual)``) and, if asked, the per-stage maps."""
        if not output_hidden_states:
            return self.timm_model.forward_features(x), None
        indices = list(output_hidden_states) if isinstance(output_hidden_states, (list, tuple)) else None
        features, intermediates = self.timm_model.forward_intermediates(x, indices=indices)
        return features, tuple(intermediates)


class SifaModel(SifaPreTrainedModel):
    """SIFA backbone without classifier: ``pixel_values (B, T, C, H, W)`` → final map and pooled features."""

    # a classification checkpoint loads into the backbone; its classifiers are dropped silently
    _keys_to_ignore_on_load_unexpected = [rf"^{TIMM_PREFIX}\.(fc|fc_dual|head\.fc)\."]

    def __init__(self, config: SifaConfig, timm_model: TimmSifaModel | None = None) -> None:
        super().__init__(config)
        self._init_timm_model(timm_model, num_classes=0)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | list[int] | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
    ) -> SifaModelOutput | tuple[Any, ...]:
        r"""
        Args:
            pixel_values: float clips ``(B, T, C, H, W)``, normalised as by :class:`SifaVideoProcessor` (other float
                dtypes are cast to the weights' dtype; integer frames are refused). ``B`` may be 0.
            output_hidden_states: also return the per-stage maps (a list of stage indices selects some).
            return_dict: return a :class:`SifaModelOutput` (default: ``config.return_dict``) or a tuple.
            output_attentions: unsupported (SIFA and Swin windows expose no attention maps); must not be True.

        Returns:
            :class:`SifaModelOutput` (``last_hidden_state`` ``(B, C, T', H', W')``, ``pooler_output`` ``(B, D)``).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x = self._timm_input(pixel_values, output_attentions)
        features, hidden_states = self._features(x, output_hidden_states)
        pooled = self.timm_model.forward_head(features, pre_logits=True)  # (B, D)
        last, dual = features if isinstance(features, tuple) else (features, None)
        if not return_dict:
            return tuple(v for v in (last, pooled, hidden_states, dual) if v is not None)
        return SifaModelOutput(
            last_hidden_state=last, pooler_output=pooled, hidden_states=hidden_states, dual_hidden_state=dual
        )


class SifaForVideoClassification(SifaPreTrainedModel):
    """SIFA video classifier (see the module docstring for what ``logits`` and ``loss`` are per family)."""

    def __init__(self, config: SifaConfig, timm_model: TimmSifaModel | None = None) -> None:
        super().__init__(config)
        num_labels = int(config.num_labels or 0)
        if num_labels < 1:
            raise ValueError("SifaForVideoClassification needs num_labels >= 1; use SifaModel for features")
        if timm_model is not None and timm_model.num_classes != num_labels:
            raise ValueError(f"timm model has num_classes={timm_model.num_classes}, config {num_labels}")
        self._init_timm_model(timm_model, num_classes=num_labels)
        self.num_labels = num_labels
        self.post_init()

    def _check_labels(self, labels: Any, logits: torch.Tensor) -> torch.Tensor:
        """Refuse labels the loss would reject with a raw torch error: wrong type, batch size or class index."""
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor of class indices (B,), got {type(labels).__name__}")
        if labels.shape[:1] != logits.shape[:1]:
            shape = tuple(labels.shape)
            raise ValueError(f"labels of shape {shape} do not match the batch of {logits.shape[0]} clips")
        if self._single_label() and not labels.is_floating_point() and labels.numel():
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.num_labels:
                bad = high if high >= self.num_labels else low
                raise ValueError(f"labels hold class index {bad}, outside [0, {self.num_labels}) (num_labels)")
        elif self._single_label() and labels.is_floating_point() and labels.dim() == 1:
            raise TypeError(
                f"labels of dtype {labels.dtype} (B,): single-label classification takes integer class indices "
                "(labels.long()); set config.problem_type for float targets"
            )
        return labels

    def _single_label(self) -> bool:
        """Single-label classification: the problem type the reference two-head combination is defined for."""
        problem = self.config.problem_type
        return problem == "single_label_classification" or (problem is None and self.num_labels > 1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | list[int] | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
    ) -> SifaVideoClassifierOutput | tuple[Any, ...]:
        r"""
        Args:
            pixel_values: float clips ``(B, T, C, H, W)``, normalised as by :class:`SifaVideoProcessor` (other float
                dtypes are cast to the weights' dtype; integer frames are refused). ``B`` may be 0.
            labels: ``(B,)`` class indices (or targets of ``config.problem_type``) for the loss.
            output_hidden_states: also return the per-stage maps (a list of stage indices selects some).
            return_dict: return a :class:`SifaVideoClassifierOutput` (default: ``config.return_dict``) or a tuple.
            output_attentions: unsupported (SIFA and Swin windows expose no attention maps); must not be True.

        Returns:
            :class:`SifaVideoClassifierOutput`: ``logits`` ``(B, num_labels)`` (softmax = prediction), ``loss``
            with labels, ``head_logits`` for SIFA-Net.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x = self._timm_input(pixel_values, output_attentions)
        features, hidden_states = self._features(x, output_hidden_states)
        head_logits = None
        if isinstance(self.timm_model, SifaResNet):
            pooled = self.timm_model.forward_head(features, pre_logits=True)  # (B, 2C): main, dual
            main, dual = pooled.chunk(2, dim=1)
            fc, fc_dual = self.timm_model.get_classifier()
            head_logits = (fc(main), fc_dual(dual))  # (B, N) each
            # single-label: log((softmax(a) + softmax(b)) / 2); multi-label / regression: the mean of both heads
            single = self._single_label()
            logits = combine_heads(*head_logits) if single else (head_logits[0] + head_logits[1]) / 2
        else:
            logits = self.timm_model.forward_head(features)  # (B, N)

        loss = None
        if labels is not None:
            labels = self._check_labels(labels, logits).to(logits.device)
            if head_logits is None:
                loss = self.loss_function(labels, logits, self.config)
            elif isinstance(self.timm_model, SifaResNet) and self._single_label() and not labels.is_floating_point():
                self.config.problem_type = "single_label_classification"
                loss = self.timm_model.loss(head_logits, labels)  # reference CE(a) + CE(b)
            else:
                loss = sum(self.loss_function(labels, head, self.config) for head in head_logits)

        if not return_dict:
            return tuple(v for v in (loss, logits, hidden_states, head_logits) if v is not None)
        return SifaVideoClassifierOutput(
            loss=loss, logits=logits, hidden_states=hidden_states, head_logits=head_logits
        )
