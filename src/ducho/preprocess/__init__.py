"""Per-modality preprocessing that is data, not model code."""
