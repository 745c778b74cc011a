"""The typed configuration: every key Ducho accepts, with its default.

Settings are frozen; the runner and the extractors receive them and never change them, so one model's
settings cannot leak into the next.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

Pooling = Literal["mean", "avg", "cls", "max", "none"]
OutputFormat = Literal["npy", "matrix", "sparse", "parquet"]
OutputDtype = Literal["float32", "float16"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
EmptyTextPolicy = Literal["skip", "encode"]
DuplicatePolicy = Literal["first", "last", "skip_all"]
ImageScaling = Literal["zscore", "minmax"]
Fusion = Literal["concat", "sum", "mul", "mean"]
Runtime = Literal["torch", "onnx", "auto"]
Quantize = Literal["none", "int8"]

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


class Settings(BaseModel):
    """Base of every section: unknown keys are errors and values cannot be changed after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Settings):
    """One pre-trained model of a source, with the layers to extract from it (keys every modality shares)."""

    model_name: str = Field(min_length=1, description="Hub id, local folder or file, or a library class name.")
    backend: str | None = Field(None, description="Registered backend; chosen from the model when left out.")
    output_layers: list[str] = Field(default_factory=list,
                                     description="Layers to extract; the backend's default when empty.")
    pooling: Pooling | None = Field(None, description="How tokens, time steps or positions are pooled.")
    batch_size: PositiveInt = 32
    task: str | None = Field(None, description="Model variant, e.g. 'sentiment-analysis' or an Auto class name.")
    revision: str | None = None
    normalize: bool = Field(False, description="L2-normalise every written vector.")
    precision: Precision = Field("auto", description="auto: fp16 autocast on CUDA, fp32 elsewhere.")
    trust_remote_code: bool = Field(False, description="Let transformers run code shipped with a hub model.")
    trust_pickle: bool = Field(False, description="Load a whole pickled model file (unpickling runs its code).")
    params: dict[str, Any] = Field(default_factory=dict, description="Backend-specific settings (e.g. handcrafted "
                                                                     "bins); each backend checks its own keys.")
    runtime: Runtime = Field("torch", description="torch: the framework's forward; onnx: the model exported once "
                                                  "(cached) and run by ONNX Runtime; auto: both timed on the first "
                                                  "batch, the faster kept (torch and transformers backends).")
    quantize: Quantize = Field("none", description="int8: dynamic int8 quantization of the exported graph "
                                                   "(runtime onnx or auto).")
    min_cosine: float = Field(0.99, gt=0, le=1, description="quantize int8: the least cosine to the fp32 torch "
                                                            "vectors on the first batch; below it the run stops.")

    @model_validator(mode="after")
    def _quantize_needs_onnx(self) -> ModelSpec:
        if self.quantize != "none" and self.runtime == "torch":
            raise ValueError(f"quantize {self.quantize!r} quantizes the exported ONNX graph; set runtime: onnx "
                             "(or auto), or quantize: none")
        return self

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


class TextModelSpec(ModelSpec):
    """A text model: tokenizer and cleaning settings."""

    clear_text: bool = Field(False, description="Drop punctuation, digits, symbols; keep letters of every script.")
    tokenizer_name: str | None = None
    max_length: PositiveInt | None = Field(None, description="Token limit; the model's own maximum when unset.")


class VisualModelSpec(ModelSpec):
    """An image model: weights and preprocessing (the model's own unless reshape/preprocessing are given)."""

    weights: str | None = Field(None, description="torch: DEFAULT (when unset), none, a weights enum name, or a "
                                                  "local state-dict file.")
    reshape: tuple[PositiveInt, PositiveInt] | None = Field(None, description="[width, height] to resize to.")
    preprocessing: ImageScaling | None = Field(None, description="zscore (with mean/std) or minmax to [0, 1].")
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    image_processor_name: str | None = Field(None, description="transformers: another hub id for the processor.")


class AudioModelSpec(ModelSpec):
    """An audio model: how waveforms are read, resampled and cut into windows."""

    weights: str | None = Field(None, description="torch: DEFAULT (when unset), none, or a local state-dict file.")
    sample_rate: PositiveInt | None = Field(None, description="Resample to this rate; the model's own when unset.")
    mono: bool = True
    offset: float = Field(0.0, ge=0, description="Seconds skipped at the start of every file.")
    max_seconds: float | None = Field(None, gt=0, description="Read at most this many seconds of every file.")
    window_seconds: float | None = Field(None, gt=0, description="Long audio is cut into windows of this length.")
    hop_seconds: float | None = Field(None, gt=0, description="Step between windows; window_seconds when unset.")
    feature_extractor_name: str | None = Field(None, description="transformers: another hub id for the processor.")


class TextualSource(Settings):
    """A TSV of texts: item descriptions (items) or reviews (interactions)."""

    input_path: str
    output_path: str
    model: list[TextModelSpec] = Field(min_length=1)
    item_column: str | None = Field(None, description="Item id column; the first (items) or second column by default.")
    user_column: str | None = Field(None, description="Interactions: user id column; the first column by default.")
    text_column: str | list[str] | None = Field(None, description="Text column(s); the last column by default.")
    empty_text: EmptyTextPolicy = "skip"
    duplicate_ids: DuplicatePolicy = "first"
    format: OutputFormat | None = Field(None, description="Overrides the top-level format for this source.")
    dtype: OutputDtype | None = Field(None, description="Overrides the top-level dtype for this source.")


class TextualModality(Settings):
    items: TextualSource | None = None
    interactions: TextualSource | None = None


class MediaSource(Settings):
    """A folder of files (items), or a folder plus a TSV mapping each file to a user and an item (interactions)."""

    input_path: str = Field(description="Folder of files.")
    output_path: str
    recursive: bool = Field(False, description="Include files in sub-folders (the id keeps the sub-folder).")
    mapping_path: str | None = Field(None, description="Interactions: TSV with a file name, a user and an item.")
    file_column: str | None = Field(None, description="Mapping: file name column; the first by default.")
    user_column: str | None = Field(None, description="Mapping: user id column; the second by default.")
    item_column: str | None = Field(None, description="Mapping: item id column; the third by default.")
    duplicate_ids: DuplicatePolicy = "first"
    format: OutputFormat | None = Field(None, description="Overrides the top-level format for this source.")
    dtype: OutputDtype | None = Field(None, description="Overrides the top-level dtype for this source.")


class VisualSource(MediaSource):
    model: list[VisualModelSpec] = Field(min_length=1)


class AudioSource(MediaSource):
    model: list[AudioModelSpec] = Field(min_length=1)


class VisualModality(Settings):
    items: VisualSource | None = None
    interactions: VisualSource | None = None


class AudioModality(Settings):
    items: AudioSource | None = None
    interactions: AudioSource | None = None


class JointModelSpec(ModelSpec):
    """An image-text dual encoder (CLIP, SigLIP, ALIGN, AltCLIP...): both towers, and optionally their fusion."""

    fusion: Fusion | None = Field(None, description="Also write the two embeddings fused: concat|sum|mul|mean.")
    weights: str | None = Field(None, description="open_clip: a local checkpoint file, or none (random).")
    clear_text: bool = False
    tokenizer_name: str | None = None
    image_processor_name: str | None = None
    max_length: PositiveInt | None = None
    reshape: tuple[PositiveInt, PositiveInt] | None = None
    preprocessing: ImageScaling | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


class JointPaths(Settings):
    """The reference 2.0 spelling: one path per side."""

    visual: str
    textual: str


class JointSource(Settings):
    """Images and texts of the same records, joined by id (never by position)."""

    input_path: JointPaths
    output_path: str | JointPaths = Field(description="One folder, or {visual, textual}: image and fused layers "
                                                      "go to visual, text layers to textual.")
    model: list[JointModelSpec] = Field(min_length=1)
    item_column: str | None = Field(None, description="Item id column of the TSV; the first (items) or second.")
    user_column: str | None = Field(None, description="Interactions: user id column of the TSV; the first.")
    text_column: str | list[str] | None = Field(None, description="Text column(s); the last column by default.")
    empty_text: EmptyTextPolicy = "skip"
    duplicate_ids: DuplicatePolicy = "first"
    recursive: bool = False
    mapping_path: str | None = Field(None, description="Interactions: TSV mapping image files to user and item "
                                                       "(columns: file, user, item).")
    format: OutputFormat | None = None
    dtype: OutputDtype | None = None


class JointModality(Settings):
    items: JointSource | None = None
    interactions: JointSource | None = None


class RaySettings(Settings):
    """Where and how `executor: ray` runs: decoding as Ray tasks, the models as an actor pool (README: On a
    cluster)."""

    address: str = Field("local", description="local: start a cluster inside the run; auto: the cluster started with "
                                              "`ray start` on this machine; HOST:PORT or ray://HOST:PORT.")
    actors: PositiveInt | None = Field(None, description="Model actors; default: one per GPU when the cluster has "
                                                         "GPUs, otherwise one per node, sized to its CPUs.")
    gpus_per_actor: float | None = Field(None, ge=0, description="Default: 1 when the cluster has GPUs, else 0.")
    cpus_per_actor: float | None = Field(None, gt=0, description="Default: 1 with GPUs; without, the node's CPUs "
                                                                 "less one for decoding.")
    decode_cpus: float = Field(1, gt=0, description="CPUs per decoding task (images, audio).")
    num_cpus: PositiveInt | None = Field(None, description="address local: the CPUs of the cluster it starts "
                                                           "(default: all of this machine's).")
    wait_for_actors: bool = Field(False, description="Hand out work only once every model actor is up (all share "
                                                     "from the first batch); default: decoding starts at once and "
                                                     "the first actors up take the first batches.")


class Config(Settings):
    """A whole Ducho run."""

    dataset_path: str = "."
    device: str = "auto"
    device_fallback_to_cpu: bool = Field(False, description="Run on the CPU (with a warning) when the GPU is missing.")
    format: OutputFormat = "npy"
    dtype: OutputDtype = Field("float32", description="Precision of the written vectors; float16 halves the size "
                                                      "(not with format sparse).")
    strict: bool = Field(False, description="Stop at the first skipped record instead of reporting it.")
    overwrite: bool = False
    report: bool = Field(False, description="Write report.html (`ducho report`) in dataset_path after the run.")
    log_dir: str = Field("logs", description="Run logs and resolved configs, relative to dataset_path.")
    workers: int | None = Field(None, ge=0, description="Processes that decode and preprocess files while the "
                                                        "model runs; 0 decodes in a thread; auto when unset.")
    executor: Literal["local", "ray"] = Field("local", description="local: this process and its decoding workers; "
                                                               "ray: a Ray cluster (the `ray` section).")
    ray: RaySettings = Field(default_factory=RaySettings)
    textual: TextualModality | None = None
    visual: VisualModality | None = None
    audio: AudioModality | None = None
    visual_textual: JointModality | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"device {value!r} is not accepted; accepted: {', '.join(DEVICE_CHOICES)}")
        return value


MODALITIES = ("textual", "visual", "audio", "visual_textual")
SOURCES = ("items", "interactions")
