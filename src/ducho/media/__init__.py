"""Decoding of media files into what the models see."""
