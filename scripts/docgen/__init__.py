"""Documentation generated from the code (schema, backend registry, CLI), used by the MkDocs hook and the tests."""
