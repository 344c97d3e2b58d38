"""Datasets (readers, registry, download) and tasks built from them."""
