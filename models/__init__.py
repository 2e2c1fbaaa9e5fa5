"""The zoo's systems, one folder each. Importing this package registers them with transformers' Auto classes.

Every shipped trained artefact of a system (weights, their evaluation figures) lives in its folder's
`trained/` subpackage; `trained_dir(system)` finds it."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

from . import mofme  # noqa: E402,F401  (MoFME: AutoModelForImageToImage)
from . import upcycled  # noqa: E402,F401  (upcycled dense decoders: AutoModelForCausalLM)
from . import moiie, mote, moe_llava  # noqa: E402,F401  (vision-language MoEs: AutoModel)
from . import xmoe  # noqa: E402,F401  (XMoE: AutoModelForCausalLM, model_type "xmoe")
from . import mome  # noqa: E402,F401  (MoME: AutoModelForSpeechSeq2Seq + the ASR pipeline, model_type "mome")
from . import unimoe  # noqa: E402,F401  (Uni-MoE: AutoModel / AutoModelForImageTextToText, model_type "unimoe")
from . import mova  # noqa: E402,F401  (MoVA: AutoModel / AutoModelForImageTextToText, model_type "mova")


def trained_dir(system: str) -> Path:
    """models/<system>/trained/ (the `zoo.models.<system>.trained` package) as a folder, found through
    importlib.resources, so a source checkout, an editable install and an installed wheel agree.

    `system` is the package name or the command-line name (`moe-llava` -> `moe_llava`). Recipes that
    ship (`--set ship=true`) write here; loaders read from here."""
    package = f"{__name__}.{system.replace('-', '_')}.trained"
    try:
        folder = importlib.resources.files(package)
    except ModuleNotFoundError as error:
        if error.name is None or not package.startswith(error.name):
            raise  # a dependency of the system package is missing, not the folder
        raise ValueError(f"system {system!r} ships no trained artefacts: there is no package {package} "
                         f"(a folder models/{system.replace('-', '_')}/trained/ with an __init__.py)") from None
    if not isinstance(folder, Path):  # e.g. imported from a zip archive: the loaders need real files
        raise RuntimeError(f"{package} is not a folder on disk ({folder!r}); install the zoo unzipped")
    return folder
