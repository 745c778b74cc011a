"""Sources list the records of one modality and source (items or interactions) without decoding them."""

from .base import Record, Skip

__all__ = ["Record", "Skip"]
