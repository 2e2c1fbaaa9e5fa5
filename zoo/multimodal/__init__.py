"""Multimodal machinery: processors, towers, connectors, and the wrapper model that splices encoder
features into an upcycled language model at placeholder tokens, with a modality id per token."""
