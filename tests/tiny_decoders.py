"""Tiny random dense decoders of every architecture zoo.upcycle supports (a few seconds to build all).

The init std is large (0.2) so the FFNs visibly shape the logits: a wrong upcycling shows up far
above the 1e-5 tolerance of the function-preservation tests."""
import torch
import transformers as T

ARCHITECTURES = ["llama", "mistral", "qwen2", "qwen3", "gemma3_text", "phi3", "phi", "gpt2"]
VOCAB = 97


def tiny_config(arch: str, **overrides):
    if arch == "gpt2":
        kwargs = dict(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, n_positions=64, n_inner=64,
                      initializer_range=0.2, bos_token_id=1, eos_token_id=2)
        kwargs.update(overrides)
        return T.GPT2Config(**kwargs)
    classes = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "qwen2": T.Qwen2Config, "qwen3": T.Qwen3Config,
               "gemma3_text": T.Gemma3TextConfig, "phi3": T.Phi3Config,
               "phi": T.PhiConfig}
    kwargs = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    kwargs.update({"gemma3_text": dict(head_dim=8, sliding_window=16), "qwen3": dict(head_dim=8)}.get(arch, {}))
    kwargs.update(overrides)
    return classes[arch](**kwargs)


def tiny_decoder(arch: str = "llama", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return T.AutoModelForCausalLM.from_config(tiny_config(arch, **overrides)).eval()


def token_ids(batch: int = 2, length: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))
