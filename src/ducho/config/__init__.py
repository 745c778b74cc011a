"""Configuration: the schema, the loader and the translation of reference-release spellings."""

from .load import apply_override, load_config, translation_notes
from .schema import Config, ModelSpec, TextModelSpec, TextualSource

__all__ = ["Config", "ModelSpec", "TextModelSpec", "TextualSource", "apply_override", "load_config",
           "translation_notes"]
