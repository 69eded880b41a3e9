"""Configuration of SIFA models in transformers (``model_type="sifa"``).

One ``config.json`` serves both libraries: transformers reads ``model_type`` and the fields below; timm's
``create_model("hf-hub:<repo>")`` / ``create_model("local-dir:<dir>")`` reads ``architecture``, ``num_classes``,
``model_args`` and ``pretrained_cfg`` (see ``timm.models._hub._parse_model_cfg``), which :meth:`SifaConfig.to_dict`
always writes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from transformers import PreTrainedConfig

__all__ = ["SIFA_FAMILIES", "SifaConfig"]

SIFA_FAMILIES = ("resnet", "swin")
_MEAN = (0.485, 0.456, 0.406)  # ImageNet, as every released SIFA model
_STD = (0.229, 0.224, 0.225)
# create_model kwargs that mirror a config field (they may appear in a timm-written ``model_args``)
_FIELD_ARGS = {"num_frames": "num_frames", "in_chans": "num_channels", "img_size": "image_size"}
# keys timm's PretrainedCfg accepts in ``pretrained_cfg`` (anything else makes timm raise a TypeError)
_TIMM_CFG_KEYS = (
    "url",
    "hf_hub_id",
    "hf_hub_filename",
    "tag",
    "custom_load",
    "input_size",
    "test_input_size",
    "min_input_size",
    "fixed_input_size",
    "interpolation",
    "crop_pct",
    "test_crop_pct",
    "crop_mode",
    "mean",
    "std",
    "num_classes",
    "label_offset",
    "label_names",
    "label_descriptions",
    "pool_size",
    "test_pool_size",
    "first_conv",
    "classifier",
    "license",
    "description",
    "origin_url",
    "paper_name",
    "paper_ids",
    "notes",
)


_ERROR_PREFIX = "SifaConfig: "
# from_pretrained keyword arguments that replace a saved config's label set
_LABEL_OVERRIDES = ("num_labels", "id2label")
# SifaConfig.from_pretrained → from_dict: where the dict was read (AutoConfig passes ``name_or_path``)
_SOURCE_KWARG = "_sifa_config_source"


def _error(message: str) -> ValueError:
    """A config error; :meth:`SifaConfig.from_dict` replaces the prefix with the file it read."""
    return ValueError(_ERROR_PREFIX + message)


def _check_dtype(value: Any) -> None:
    """Refuse a ``dtype`` that transformers would turn into a bare ``AttributeError`` (``123``, ``"float99"``)."""
    import torch

    if value is None or value == "auto" or isinstance(value, torch.dtype):
        return
    name = value.removeprefix("torch.") if isinstance(value, str) else None
    if name is None or not isinstance(getattr(torch, name, None), torch.dtype):
        raise _error(f"dtype must be a torch dtype name such as 'float32' or 'bfloat16', got {value!r}")


def _family(architecture: str) -> str:
    for family in SIFA_FAMILIES:
        if f"_{family}" in architecture:
            return family
    raise _error(
        f"architecture {architecture!r} is not a SIFA variant: expected a timm name of the "
        f"{SIFA_FAMILIES} families such as 'sifa_resnet50', 'c2d_resnet50' or 'sifa_swin_base_patch4_window7_224'"
    )


def _pair(size: Any) -> list[Any]:
    return list(size) if isinstance(size, (list, tuple)) else [size, size]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _error(f"{name} must be a positive int, got {value!r}")
    return value


def _floats(name: str, values: Any, count: int) -> list[float]:
    """``count`` finite numbers (per-channel mean / std)."""
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise _error(f"{name} must be a list of {count} numbers (one per channel), got {values!r}")
    if len(values) != count:
        raise _error(f"{name} has {len(values)} values but num_channels={count}: {list(values)}")
    if not all(math.isfinite(v) for v in values):
        raise _error(f"{name} must be finite, got {list(values)}")
    return [float(v) for v in values]


def _label_names(names: Any, num_classes: int | None) -> list[str]:
    """``label_names`` checked: a list of strings, one per class."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise _error(f"label_names must be a list of strings, got {names!r}")
    if num_classes is not None and len(names) != num_classes:
        raise _error(f"label_names has {len(names)} names but num_classes={num_classes}")
    return list(names)


def _config_file(name_or_path: Any) -> str | None:
    """``<dir>/config.json`` for the folder or Hub repo a config is read from (None when unknown)."""
    if not name_or_path:
        return None
    name = str(name_or_path)
    return name if name.endswith(".json") else f"{name.rstrip('/')}/config.json"


class SifaConfig(PreTrainedConfig):
    r"""Configuration of a SIFA video backbone (:class:`SifaModel`, :class:`SifaForVideoClassification`).

    The network itself is defined once, as a timm model (``sifa_hub/models``); this config names the timm
    variant and the arguments it is built with:
    ``timm.create_model(architecture, num_classes=num_labels, **config.timm_kwargs())``.

    Args:
        architecture (`str`, *optional*, defaults to `"sifa_resnet50"`):
            timm variant name: ``sifa_resnet{_pico,50,101}``, ``c2d_resnet*`` (C2D twins),
            ``sifa_swin_{pico,tiny,small,base,large}*``, ``c2d_swin_*``.
        num_frames (`int`, *optional*, defaults to 16):
            Frames per clip (``T`` of ``pixel_values``); must be a multiple of the variant's early (temporal)
            stride. Passed to timm as ``num_frames``.
        image_size (`int` or `list[int]`, *optional*, defaults to 224):
            Frame size (square int or ``[H, W]``) the processor crops to. The Swin family is built for it
            (``img_size``); the ResNet family takes any size.
        num_channels (`int`, *optional*, defaults to 3):
            Input channels (``in_chans`` in timm).
        model_args (`dict`, *optional*):
            Further ``timm.create_model`` keyword arguments that define the variant beyond its registered defaults
            (e.g. ``{"learn_offsets": True}``, ``{"depths": [2, 2, 6, 2]}``, ``{"drop_path_rate": 0.1}``). Must be
            JSON-serialisable. A ``num_classes`` entry (timm's ``save_for_hf`` writes one) must agree with the
            labels and is folded into ``num_labels``.
        image_mean (`list[float]`, *optional*, defaults to ImageNet mean):
            Per-channel mean used by the video processor (and recorded for timm).
        image_std (`list[float]`, *optional*, defaults to ImageNet std):
            Per-channel std used by the video processor (and recorded for timm).
        pretrained_cfg (`dict`, *optional*):
            timm ``pretrained_cfg`` metadata (license, origin, crop_pct, ...). Keys timm's ``PretrainedCfg`` does
            not know are rejected. ``input_size``, ``mean``, ``std``, ``num_classes`` and ``label_names`` are
            always rewritten from the fields above when serialising.
        id2label / label2id / num_labels:
            transformers' label maps; ``num_labels`` is the classifier size (timm's ``num_classes``).

    Example:
        ```python
        >>> from sifa_hub.hf import SifaConfig, SifaForVideoClassification
        >>> config = SifaConfig(architecture="sifa_swin_pico", num_frames=8, image_size=32, num_labels=4)
        >>> model = SifaForVideoClassification(config)
        ```
    """

    model_type = "sifa"
    # SIFA-Net's raw per-head logits: Trainer's predictions are the combined ``logits`` only
    keys_to_ignore_at_inference = ["head_logits"]

    architecture: str = "sifa_resnet50"
    num_frames: int = 16
    image_size: int | list[int] = 224
    num_channels: int = 3
    model_args: dict[str, Any] | None = None
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    pretrained_cfg: dict[str, Any] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        # keys timm writes at the top level of config.json: the classifier size and informational fields
        num_classes = kwargs.pop("num_classes", None)
        if not isinstance(self.model_args, (dict, type(None))):
            raise _error(f"model_args must be a dict of timm.create_model arguments, got {self.model_args!r}")
        model_args = dict(self.model_args or {})
        if "num_classes" in model_args:  # timm's save_for_hf also records it among the create_model args
            recorded = model_args.pop("num_classes")
            if num_classes is not None and recorded != num_classes:
                raise _error(f"model_args num_classes={recorded} but num_classes={num_classes}")
            num_classes, self.model_args = recorded, model_args
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
            raise _error(f"num_classes must be an int, got {num_classes!r}")
        label_names = kwargs.pop("label_names", None)
        for informational in ("num_features", "global_pool", "label_descriptions", "family"):
            kwargs.pop(informational, None)
        if self.id2label is None and label_names is not None:
            self.id2label = dict(enumerate(_label_names(label_names, num_classes)))
            self.label2id = {name: i for i, name in self.id2label.items()}
        if self.id2label is None and num_classes is not None and "num_labels" not in kwargs:
            kwargs["num_labels"] = num_classes
        _check_dtype(kwargs.get("dtype", getattr(self, "dtype", None)))
        super().__post_init__(**kwargs)
        labels: dict[int, str] = {int(i): name for i, name in (self.id2label or {}).items()}
        if sorted(labels) != list(range(len(labels))):
            raise _error(f"id2label keys must be the class indices 0..{len(labels) - 1}, got {sorted(labels)}")
        if label_names is not None and list(label_names) != [labels[i] for i in range(len(labels))]:
            raise _error(f"label_names {list(label_names)} disagree with id2label {labels}")
        if self.label2id is None and len(set(labels.values())) == len(labels):
            self.label2id = {str(name): int(i) for i, name in labels.items()}
        if num_classes is not None and num_classes != self.num_labels:
            raise _error(f"num_classes={num_classes} disagrees with the {self.num_labels} labels of id2label")
        self._validate()

    def _validate(self) -> None:
        """Check (and normalise) every field; raise a ``ValueError`` naming the field."""
        if not isinstance(self.architecture, str) or not self.architecture:
            raise _error(f"architecture must be a timm model name, got {self.architecture!r}")
        _family(self.architecture)
        _positive_int("num_frames", self.num_frames)
        _positive_int("num_channels", self.num_channels)
        size = self.image_size
        if isinstance(size, (list, tuple)):
            if len(size) != 2:
                raise _error(f"image_size must be an int or [H, W], got {size!r}")
            self.image_size = [_positive_int("image_size", s) for s in size]
        else:
            _positive_int("image_size", size)
        self.model_args = self._validated_model_args()
        mean, std = self.image_mean, self.image_std
        self.image_mean = _floats("image_mean", _MEAN if mean is None else mean, self.num_channels)
        self.image_std = _floats("image_std", _STD if std is None else std, self.num_channels)
        if any(s <= 0 for s in self.image_std):
            raise _error(f"image_std must be positive, got {self.image_std}")
        self.pretrained_cfg = self._validated_pretrained_cfg()

    def _validated_model_args(self) -> dict[str, Any]:
        args = dict(self.model_args or {})
        if not all(isinstance(k, str) for k in args):
            raise _error(f"model_args keys must be strings, got {list(args)}")
        for key in ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "features_only"):
            if key in args:
                raise _error(f"model_args must not hold {key!r} (it is not an architecture argument)")
        for arg, field in _FIELD_ARGS.items():  # fold create_model kwargs that mirror a field into the field
            if arg in args:
                value, current = args.pop(arg), getattr(self, field)
                if arg == "img_size":  # int or (H, W) on either side
                    value, current = _pair(value), _pair(current)
                if value != current:
                    raise _error(f"model_args[{arg!r}]={value!r} contradicts {field}={current!r}; set {field} only")
        try:
            json.dumps(args)
        except (TypeError, ValueError) as e:
            raise _error(f"model_args must be JSON-serialisable: {e}") from e
        return args

    def _validated_pretrained_cfg(self) -> dict[str, Any]:
        if not isinstance(self.pretrained_cfg, (dict, type(None))):
            raise _error(f"pretrained_cfg must be a dict, got {self.pretrained_cfg!r}")
        cfg = dict(self.pretrained_cfg or {})
        unknown = sorted(set(cfg) - set(_TIMM_CFG_KEYS) - {"architecture"})
        if unknown:
            raise _error(f"pretrained_cfg has keys timm's PretrainedCfg does not accept: {unknown}")
        cfg.pop("architecture", None)
        try:  # JSON-normal form (tuples → lists) so that a loaded config equals the saved one
            return dict(json.loads(json.dumps(cfg)))
        except (TypeError, ValueError) as e:
            raise _error(f"pretrained_cfg must be JSON-serialisable: {e}") from e

    @property
    def family(self) -> str:
        """``"resnet"`` (SIFA-Net, C2D ResNet) or ``"swin"`` (SIFA-Transformer, C2D Swin)."""
        return _family(self.architecture)

    @property
    def frame_size(self) -> tuple[int, int]:
        """``(H, W)`` of the frames."""
        size = self.image_size
        return (size[0], size[1]) if isinstance(size, (list, tuple)) else (size, size)

    def timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``timm.create_model(architecture, num_classes=..., **kwargs)``.

        ``model_args`` plus ``num_frames``, ``in_chans`` and, for the Swin family (fixed input size), ``img_size``.
        """
        kwargs = dict(self.model_args or {}, num_frames=self.num_frames, in_chans=self.num_channels)
        if self.family == "swin":
            kwargs["img_size"] = list(self.frame_size)
        return kwargs

    def timm_pretrained_cfg(self) -> dict[str, Any]:
        """timm ``pretrained_cfg`` for ``config.json``: stored metadata + input size, mean/std and labels."""
        cfg = dict(self.pretrained_cfg or {})
        cfg.update(
            input_size=[self.num_channels, *self.frame_size],
            mean=list(self.image_mean or _MEAN),
            std=list(self.image_std or _STD),
            num_classes=self.num_labels,
        )
        if self.family == "swin":
            cfg["fixed_input_size"] = True
        cfg.pop("label_names", None)
        labels: dict[Any, str] = dict(self.id2label or {})
        if labels and sorted(labels) == list(range(len(labels))):
            cfg["label_names"] = [labels[i] for i in range(len(labels))]
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """transformers fields plus the timm view (``architecture``, ``num_classes``, ``model_args``,
        ``pretrained_cfg``, ``label_names``) so that timm can build and load the same checkpoint."""
        output = super().to_dict()
        output["num_classes"] = self.num_labels
        output["model_args"] = self.timm_kwargs()
        output["pretrained_cfg"] = self.timm_pretrained_cfg()
        if "label_names" in output["pretrained_cfg"]:
            output["label_names"] = output["pretrained_cfg"]["label_names"]
        output["family"] = self.family
        return output

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """transformers' ``from_pretrained``; errors in the file name it (as through ``AutoConfig``)."""
        kwargs.setdefault(_SOURCE_KWARG, str(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build from a ``config.json`` dict; errors name the file (``<dir>/config.json: num_frames must be ...``).

        Also reads a config.json written by timm alone (``save_for_hf``): fields it lacks are taken from its
        ``model_args`` (``num_frames``, ``in_chans``, ``img_size``) and ``pretrained_cfg`` (size, mean, std).
        A ``num_labels`` / ``id2label`` override (``from_pretrained(dir, num_labels=10)``) replaces the saved labels
        and the timm view of them (``num_classes``, ``label_names``).
        """
        source = _config_file(kwargs.pop(_SOURCE_KWARG, None) or kwargs.get("name_or_path")) or "config"
        try:
            config_dict = cls._complete_dict(config_dict, new_labels=any(kwargs.get(k) for k in _LABEL_OVERRIDES))
            return super().from_dict(config_dict, **kwargs)
        except ValueError as e:
            message = str(e)
            if not message.startswith(_ERROR_PREFIX):
                raise
            raise ValueError(f"{source}: {message[len(_ERROR_PREFIX) :]}") from None

    @staticmethod
    def _complete_dict(config_dict: dict[str, Any], new_labels: bool) -> dict[str, Any]:
        """``config_dict`` with the fields a timm-written config lacks filled in from its timm view."""
        config_dict = dict(config_dict)
        if "architecture" not in config_dict:
            raise _error("architecture is missing (the timm variant name, e.g. 'sifa_resnet50')")
        if new_labels:
            for key in ("num_classes", "label_names", "id2label", "label2id"):
                config_dict.pop(key, None)
        args = config_dict.get("model_args")
        if isinstance(args, dict):
            if new_labels:
                config_dict["model_args"] = args = {k: v for k, v in args.items() if k != "num_classes"}
            for arg, field in _FIELD_ARGS.items():
                if arg in args and field not in config_dict:
                    config_dict[field] = args[arg]
        timm_cfg = config_dict.get("pretrained_cfg")
        if isinstance(timm_cfg, dict):
            size = timm_cfg.get("input_size")
            if "image_size" not in config_dict and isinstance(size, (list, tuple)) and len(size) == 3:
                config_dict["image_size"] = list(size[-2:])
            for field, key in (("image_mean", "mean"), ("image_std", "std")):
                if field not in config_dict and isinstance(timm_cfg.get(key), (list, tuple)):
                    config_dict[field] = list(timm_cfg[key])
        return config_dict

    @classmethod
    def from_timm_model(cls, model: Any, **kwargs: Any) -> SifaConfig:
        """Config describing a model built by ``timm.create_model``: architecture, the create_model arguments it
        recorded, frames, frame size, channels, mean/std and ``num_classes``; ``kwargs`` (e.g. ``id2label``)
        override."""
        pretrained_cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        architecture = kwargs.pop("architecture", None) or pretrained_cfg.get("architecture")
        if not architecture:
            raise ValueError("SifaConfig.from_timm_model: the model has no pretrained_cfg['architecture']")
        skip = ("num_classes", "pretrained_cfg", "pretrained_cfg_overlay", "pretrained_model_args", *_FIELD_ARGS)
        recorded = getattr(model, "_model_args", {})
        model_args = {k: list(v) if isinstance(v, tuple) else v for k, v in recorded.items() if k not in skip}
        size = recorded.get("img_size")  # else: the built size of a fixed-size model, or the cfg's input size
        if size is None:
            fixed = pretrained_cfg.get("fixed_input_size") and getattr(model, "img_size", None) is not None
            size = model.img_size if fixed else tuple(pretrained_cfg.get("input_size", (3, 224, 224))[-2:])
        height, width = _pair(size)
        values: dict[str, Any] = {
            "architecture": architecture,
            "model_args": model_args,
            "num_frames": int(model.num_frames),
            "num_channels": int(model.in_chans),
            "image_size": height if height == width else [height, width],
            "image_mean": list(pretrained_cfg.get("mean", _MEAN)),
            "image_std": list(pretrained_cfg.get("std", _STD)),
            "pretrained_cfg": {
                k: v for k, v in pretrained_cfg.items() if k in _TIMM_CFG_KEYS and k not in ("url", "label_names")
            },
        }
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            values["num_labels"] = int(model.num_classes)
        values.update(kwargs)
        return cls(**values)
