"""The bundled demo: textual item descriptions and user reviews, extracted with the packaged MiniLM."""
