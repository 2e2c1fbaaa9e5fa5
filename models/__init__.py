"""The zoo's systems, one folder each. Importing this package registers them with transformers' Auto classes."""
