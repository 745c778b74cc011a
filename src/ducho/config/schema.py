"""The typed configuration: every key Ducho accepts, with its default.

Settings are frozen; the runner and the extractors receive them and never change them, so one model's
settings cannot leak into the next.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

Pooling = Literal["mean", "cls", "max", "none"]
OutputFormat = Literal["npy", "matrix"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
EmptyTextPolicy = Literal["skip", "encode"]
DuplicatePolicy = Literal["first", "last", "skip_all"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


class Settings(BaseModel):
    """Base of every section: unknown keys are errors and values cannot be changed after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Settings):
    """One pre-trained model of a source, with the layers to extract from it."""

    model_name: str = Field(min_length=1, description="Hub id, local folder or file, or a library class name.")
    backend: str | None = Field(None, description="Registered backend; chosen from the model when left out.")
    output_layers: list[str] = Field(default_factory=list,
                                     description="Layers to extract; the backend's default when empty.")
    pooling: Pooling | None = Field(None, description="How token or time steps are pooled; backend default if unset.")
    batch_size: PositiveInt = 32
    clear_text: bool = Field(False, description="Drop punctuation, digits, symbols; keep letters of every script.")
    task: str | None = Field(None, description="Model variant, e.g. 'sentiment-analysis' or an Auto class name.")
    tokenizer_name: str | None = None
    revision: str | None = None
    normalize: bool = Field(False, description="L2-normalise every written vector.")
    max_length: PositiveInt | None = Field(None, description="Token limit; the model's own maximum when unset.")
    precision: Precision = Field("auto", description="auto: fp16 autocast on CUDA, fp32 elsewhere.")
    trust_remote_code: bool = False

    @field_validator("output_layers", mode="before")
    @classmethod
    def _layers_as_list(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value


class TextualSource(Settings):
    """A TSV of texts: item descriptions (items) or reviews (interactions)."""

    input_path: str
    output_path: str
    model: list[ModelSpec] = Field(min_length=1)
    item_column: str | None = Field(None, description="Item id column; the first (items) or second column by default.")
    user_column: str | None = Field(None, description="Interactions: user id column; the first column by default.")
    text_column: str | list[str] | None = Field(None, description="Text column(s); the last column by default.")
    empty_text: EmptyTextPolicy = "skip"
    duplicate_ids: DuplicatePolicy = "first"
    format: OutputFormat | None = Field(None, description="Overrides the top-level format for this source.")


class TextualModality(Settings):
    items: TextualSource | None = None
    interactions: TextualSource | None = None


class Config(Settings):
    """A whole Ducho run."""

    dataset_path: str = "."
    device: str = "auto"
    device_fallback_to_cpu: bool = Field(False, description="Run on the CPU (with a warning) when the GPU is missing.")
    format: OutputFormat = "npy"
    strict: bool = Field(False, description="Stop at the first skipped record instead of reporting it.")
    overwrite: bool = False
    log_dir: str = Field("logs", description="Run logs and resolved configs, relative to dataset_path.")
    textual: TextualModality | None = None
    visual: dict | None = None
    audio: dict | None = None
    visual_textual: dict | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"device {value!r} is not accepted; accepted: {', '.join(DEVICE_CHOICES)}")
        return value


MODALITIES = ("textual", "visual", "audio", "visual_textual")
SOURCES = ("items", "interactions")
