"""Backends: one Extractor protocol, a registry that finds them, imports only when a model needs them."""
