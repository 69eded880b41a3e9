"""The ``video-classification`` pipeline for SIFA models: it honours ``frame_sampling_rate``.

transformers' `VideoClassificationPipeline` accepts ``frame_sampling_rate`` but, for models with a video processor,
drops it: the clip is sampled as if it had not been given. `SifaVideoClassificationPipeline` passes it to the SIFA
video processor as dense sampling — ``num_frames`` frames ``frame_sampling_rate`` apart, centred in the video
(`sifa_hub.data.pipeline.clip_indices`); without it the processor's own sampling applies (uniform by default).
A ``frame_sampling_rate`` or ``top_k`` that is not a positive int is refused (a ``top_k`` above the number of
classes gives every class). Models whose processor is not a SIFA one keep
transformers' behaviour unchanged.

Importing this module makes ``pipeline("video-classification", ...)`` build this class (`register_pipeline`); the
class is also usable directly: ``pipeline("video-classification", model=..., pipeline_class=...)``.
"""

from __future__ import annotations

from typing import Any

from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.video_classification import VideoClassificationPipeline

__all__ = ["SifaVideoClassificationPipeline", "register_pipeline"]

TASK = "video-classification"


def _is_sifa_processor(processor: Any) -> bool:
    """A `SifaVideoProcessor`, installed or loaded as remote code (both carry the sampling attributes)."""
    return hasattr(processor, "frame_sampling") and hasattr(processor, "frame_stride")


class SifaVideoClassificationPipeline(VideoClassificationPipeline):
    """`VideoClassificationPipeline` whose ``frame_sampling_rate`` reaches the SIFA video processor."""

    def _sanitize_parameters(self, top_k: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """transformers' parameters, with ``top_k`` checked (torch would fail on it with an unclear error)."""
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int (labels to return), got {top_k!r}")
        return super()._sanitize_parameters(top_k=top_k, **kwargs)

    def preprocess(  # type: ignore[override]  # the parent's own signature, narrower than Pipeline's
        self, video: Any, num_frames: int | None = None, frame_sampling_rate: int | None = None
    ) -> Any:
        """Decode, sample and preprocess one video into the model's inputs.

        Args:
            video: A local path or URL.
            num_frames: Frames of the clip (default: the model's ``config.num_frames``).
            frame_sampling_rate: Step between the clip's frames (dense sampling); ``None`` keeps the processor's
                sampling.
        """
        processor = self.video_processor
        if processor is None or not _is_sifa_processor(processor):
            return super().preprocess(video, num_frames=num_frames, frame_sampling_rate=frame_sampling_rate or 1)
        kwargs: dict[str, Any] = {
            "num_frames": num_frames if num_frames is not None else self.model.config.num_frames,
            "do_sample_frames": True,
        }
        if frame_sampling_rate is not None:
            rate = frame_sampling_rate
            if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
                raise ValueError(f"frame_sampling_rate must be a positive int (frames between samples), got {rate!r}")
            kwargs.update(frame_sampling="dense", frame_stride=rate)
        return processor(video, **kwargs, return_tensors="pt").to(self.dtype)


def register_pipeline() -> None:
    """Make ``pipeline("video-classification")`` build `SifaVideoClassificationPipeline` (for every model: other
    models behave as with transformers' own class)."""
    PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] = SifaVideoClassificationPipeline


register_pipeline()
