"""Keep a wrapped language model causal.

A decoder whose config has no attention implementation builds no causal mask: every token then sees the
future, and a model trained that way learns to copy the answer it is asked to predict. A wrapper's
config clears the implementation on the text config it holds (a `PreTrainedConfig(text_config=llm.config)`
shares, and resets, the LLM's own config object; `from_config(text_config)` builds with None), while
`from_pretrained` sets it. Every wrapper calls `keep_causal` once it holds its language model."""
from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

DEFAULT_ATTENTION = "sdpa"


def keep_causal(language_model: PreTrainedModel, wrapper_config: PretrainedConfig) -> None:
    """Give `language_model.config` the wrapper's attention implementation (else sdpa) when it has none."""
    if language_model.config._attn_implementation is None:
        language_model.config._attn_implementation = wrapper_config._attn_implementation or DEFAULT_ATTENTION
