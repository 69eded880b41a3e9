"""Hugging Face transformers integration: config, models, video processor, Auto* registration, remote-code export.

Importing this package registers ``model_type="sifa"`` with ``AutoConfig``,
``AutoModel``, ``AutoModelForVideoClassification`` and ``AutoVideoProcessor``, so saved SIFA checkpoints load
without ``trust_remote_code``. ``import sifa_hub`` imports it whenever transformers is installed; it needs
transformers >= 5.
"""

import importlib.util

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification, AutoVideoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES

from .configuration_sifa import SifaConfig
from .modeling_sifa import (
    SifaForVideoClassification,
    SifaModel,
    SifaModelOutput,
    SifaPreTrainedModel,
    SifaVideoClassifierOutput,
)
from .remote_code import export_for_remote_code, write_remote_code
from .video_processing_sifa import SifaVideoProcessor

__all__ = [
    "SifaConfig",
    "SifaForVideoClassification",
    "SifaModel",
    "SifaModelOutput",
    "SifaPreTrainedModel",
    "SifaVideoClassifierOutput",
    "SifaVideoProcessor",
    "export_for_remote_code",
    "write_remote_code",
]

AutoConfig.register(SifaConfig.model_type, SifaConfig, exist_ok=True)
AutoModel.register(SifaConfig, SifaModel, exist_ok=True)
AutoModelForVideoClassification.register(SifaConfig, SifaForVideoClassification, exist_ok=True)
AutoVideoProcessor.register(SifaConfig, SifaVideoProcessor, exist_ok=True)
# the video-classification pipeline checks the model class against this table of names
MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES.setdefault(SifaConfig.model_type, SifaForVideoClassification.__name__)


def _av_installed() -> bool:
    try:
        return importlib.util.find_spec("av") is not None  # a probe: PyAV itself is not imported
    except (ImportError, ValueError):
        return False


if _av_installed():  # the SIFA video-classification pipeline decodes with PyAV; importing it registers it
    from .pipeline_sifa import SifaVideoClassificationPipeline  # noqa: F401

    __all__.append("SifaVideoClassificationPipeline")
