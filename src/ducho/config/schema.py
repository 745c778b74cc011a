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

ITEMS_DOC = "Item content (descriptions, images, clips): one feature file per item."
INTERACTIONS_DOC = "User-item content (reviews, review photos): one feature file per (user, item) pair."

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
    batch_size: PositiveInt = Field(32, description="Records per forward (audio: windows per forward).")
    task: str | None = Field(None, description="Model variant, e.g. 'sentiment-analysis' or an Auto class name.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of a hub model.")
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
    tokenizer_name: str | None = Field(None, description="Another hub id or folder for the tokenizer (e.g. for a "
                                                         "tokenizer-less ONNX file); the model's own when unset.")
    max_length: PositiveInt | None = Field(None, description="Token limit; the model's own maximum when unset.")


class VisualModelSpec(ModelSpec):
    """An image model: weights and preprocessing (the model's own unless reshape/preprocessing are given)."""

    weights: str | None = Field(None, description="torch: DEFAULT (when unset), none, a weights enum name, or a "
                                                  "local state-dict file.")
    reshape: tuple[PositiveInt, PositiveInt] | None = Field(None, description="[width, height] to resize to.")
    preprocessing: ImageScaling | None = Field(None, description="zscore (with mean/std) or minmax to [0, 1].")
    mean: tuple[float, float, float] | None = Field(None, description="zscore: per-channel RGB mean (in [0, 1]); "
                                                                      "ImageNet's when unset.")
    std: tuple[float, float, float] | None = Field(None, description="zscore: per-channel RGB standard deviation; "
                                                                     "ImageNet's when unset.")
    image_processor_name: str | None = Field(None, description="transformers: another hub id for the processor.")


class AudioModelSpec(ModelSpec):
    """An audio model: how waveforms are read, resampled and cut into windows."""

    weights: str | None = Field(None, description="torch: DEFAULT (when unset), none, or a local state-dict file.")
    sample_rate: PositiveInt | None = Field(None, description="Resample to this rate; the model's own when unset.")
    mono: bool = Field(True, description="Average the channels to one; false keeps them (models that take stereo).")
    offset: float = Field(0.0, ge=0, description="Seconds skipped at the start of every file.")
    max_seconds: float | None = Field(None, gt=0, description="Read at most this many seconds of every file.")
    window_seconds: float | None = Field(None, gt=0, description="Long audio is cut into windows of this length.")
    hop_seconds: float | None = Field(None, gt=0, description="Step between windows; window_seconds when unset.")
    feature_extractor_name: str | None = Field(None, description="transformers: another hub id for the processor.")


class TextualSource(Settings):
    """A TSV of texts: item descriptions (items) or reviews (interactions)."""

    input_path: str = Field(description="TSV file with a header row, relative to dataset_path.")
    output_path: str = Field(description="Folder of the features, relative to dataset_path.")
    model: list[TextModelSpec] = Field(min_length=1, description="The models to extract with (one mapping is a "
                                                                 "list of one).")
    item_column: str | None = Field(None, description="Item id column; the first (items) or second column by default.")
    user_column: str | None = Field(None, description="Interactions: user id column; the first column by default.")
    text_column: str | list[str] | None = Field(None, description="Text column(s); the last column by default.")
    empty_text: EmptyTextPolicy = Field("skip", description="skip: an empty text is a skipped record (in "
                                                            "failures.tsv); encode: it is encoded like any text.")
    duplicate_ids: DuplicatePolicy = Field("first", description="Which record of a repeated id is kept: the first, "
                                                                "the last, or none (skip_all); the others are "
                                                                "reported.")
    format: OutputFormat | None = Field(None, description="Overrides the top-level format for this source.")
    dtype: OutputDtype | None = Field(None, description="Overrides the top-level dtype for this source.")


class TextualModality(Settings):
    items: TextualSource | None = Field(None, description=ITEMS_DOC)
    interactions: TextualSource | None = Field(None, description=INTERACTIONS_DOC)


class MediaSource(Settings):
    """A folder of files (items), or a folder plus a TSV mapping each file to a user and an item (interactions)."""

    input_path: str = Field(description="Folder of files, relative to dataset_path.")
    output_path: str = Field(description="Folder of the features, relative to dataset_path.")
    recursive: bool = Field(False, description="Include files in sub-folders (the id keeps the sub-folder).")
    mapping_path: str | None = Field(None, description="Interactions: TSV with a file name, a user and an item.")
    file_column: str | None = Field(None, description="Mapping: file name column; the first by default.")
    user_column: str | None = Field(None, description="Mapping: user id column; the second by default.")
    item_column: str | None = Field(None, description="Mapping: item id column; the third by default.")
    duplicate_ids: DuplicatePolicy = Field("first", description="Which record of a repeated id is kept (first, last, "
                                                                "or none: skip_all); the others are reported.")
    format: OutputFormat | None = Field(None, description="Overrides the top-level format for this source.")
    dtype: OutputDtype | None = Field(None, description="Overrides the top-level dtype for this source.")


class VisualSource(MediaSource):
    model: list[VisualModelSpec] = Field(min_length=1, description="The image models (one mapping is a list of one).")


class AudioSource(MediaSource):
    model: list[AudioModelSpec] = Field(min_length=1, description="The audio models (one mapping is a list of one).")


class VisualModality(Settings):
    items: VisualSource | None = Field(None, description=ITEMS_DOC)
    interactions: VisualSource | None = Field(None, description=INTERACTIONS_DOC)


class AudioModality(Settings):
    items: AudioSource | None = Field(None, description=ITEMS_DOC)
    interactions: AudioSource | None = Field(None, description=INTERACTIONS_DOC)


class JointModelSpec(ModelSpec):
    """An image-text dual encoder (CLIP, SigLIP, ALIGN, AltCLIP...): both towers, and optionally their fusion."""

    fusion: Fusion | None = Field(None, description="Also write the two embeddings fused: concat|sum|mul|mean.")
    weights: str | None = Field(None, description="open_clip: a local checkpoint file, or none (random).")
    clear_text: bool = Field(False, description="Text tower: drop punctuation, digits, symbols before tokenizing.")
    tokenizer_name: str | None = Field(None, description="Text tower: another hub id or folder for the tokenizer.")
    image_processor_name: str | None = Field(None, description="Image tower: another hub id for the processor.")
    max_length: PositiveInt | None = Field(None, description="Text tower token limit; the model's own when unset.")
    reshape: tuple[PositiveInt, PositiveInt] | None = Field(None, description="Image tower: [width, height] to "
                                                                              "resize to.")
    preprocessing: ImageScaling | None = Field(None, description="Image tower: zscore (with mean/std) or minmax.")
    mean: tuple[float, float, float] | None = Field(None, description="Image tower zscore: per-channel RGB mean.")
    std: tuple[float, float, float] | None = Field(None, description="Image tower zscore: per-channel RGB std.")


class JointPaths(Settings):
    """The reference 2.0 spelling: one path per side."""

    visual: str = Field(description="The image side: a folder (input) or the image features' folder (output).")
    textual: str = Field(description="The text side: a TSV (input) or the text features' folder (output).")


class JointSource(Settings):
    """Images and texts of the same records, joined by id (never by position)."""

    input_path: JointPaths = Field(description="{visual: image folder, textual: TSV}, joined by id.")
    output_path: str | JointPaths = Field(description="One folder, or {visual, textual}: image and fused layers "
                                                      "go to visual, text layers to textual.")
    model: list[JointModelSpec] = Field(min_length=1, description="The dual encoders (one mapping is a list of one).")
    item_column: str | None = Field(None, description="Item id column of the TSV; the first (items) or second.")
    user_column: str | None = Field(None, description="Interactions: user id column of the TSV; the first.")
    text_column: str | list[str] | None = Field(None, description="Text column(s); the last column by default.")
    empty_text: EmptyTextPolicy = Field("skip", description="skip: a record with an empty text is skipped; encode: "
                                                            "it is encoded.")
    duplicate_ids: DuplicatePolicy = Field("first", description="Which record of a repeated id is kept (first, last, "
                                                                "or none: skip_all).")
    recursive: bool = Field(False, description="Include images in sub-folders (the id keeps the sub-folder).")
    mapping_path: str | None = Field(None, description="Interactions: TSV mapping image files to user and item "
                                                       "(columns: file, user, item).")
    format: OutputFormat | None = Field(None, description="Overrides the top-level format for this source.")
    dtype: OutputDtype | None = Field(None, description="Overrides the top-level dtype for this source.")


class JointModality(Settings):
    items: JointSource | None = Field(None, description=ITEMS_DOC)
    interactions: JointSource | None = Field(None, description=INTERACTIONS_DOC)


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

    dataset_path: str = Field(".", description="Every input_path and output_path is relative to it.")
    device: str = Field("auto", description="auto: the first CUDA GPU, else Apple's mps, else the CPU.")
    device_fallback_to_cpu: bool = Field(False, description="Run on the CPU (with a warning) when the GPU is missing.")
    format: OutputFormat = Field("npy", description="npy: one file per record; matrix: (N, D) features.npy + "
                                                    "ids.tsv; sparse: CSR features.npz + ids.tsv; parquet: shards.")
    dtype: OutputDtype = Field("float32", description="Precision of the written vectors; float16 halves the size "
                                                      "(not with format sparse).")
    strict: bool = Field(False, description="Stop at the first skipped record instead of reporting it.")
    overwrite: bool = Field(False, description="Recompute outputs that exist (also when their settings changed).")
    on_removed: Literal["delete", "keep"] = Field("delete", description="An incremental run (the input changed "
                                                  "since a complete run): what becomes of the vectors of records the "
                                                  "input no longer has; keep: npy files stay, matrix and parquet "
                                                  "rows follow the input's rows.")
    report: bool = Field(False, description="Write report.html (`ducho report`) in dataset_path after the run.")
    log_dir: str = Field("logs", description="Run logs and resolved configs, relative to dataset_path.")
    workers: int | None = Field(None, ge=0, description="Processes that decode and preprocess files while the "
                                                        "model runs; 0 decodes in a thread; auto when unset.")
    executor: Literal["local", "ray"] = Field("local", description="local: this process and its decoding workers; "
                                                               "ray: a Ray cluster (the `ray` section).")
    ray: RaySettings = Field(default_factory=RaySettings, description="Settings of executor: ray.")
    textual: TextualModality | None = Field(None, description="Texts from TSV files.")
    visual: VisualModality | None = Field(None, description="Images from folders.")
    audio: AudioModality | None = Field(None, description="Audio files from folders.")
    visual_textual: JointModality | None = Field(None, description="Image-text pairs through dual encoders.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"device {value!r} is not accepted; accepted: {', '.join(DEVICE_CHOICES)}")
        return value


MODALITIES = ("textual", "visual", "audio", "visual_textual")
SOURCES = ("items", "interactions")
