"""Trained weights shipped with the package (small safetensors files; see each producer)."""
