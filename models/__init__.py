"""The zoo's systems, one folder each. Importing this package registers them with transformers' Auto classes."""
from . import mofme  # noqa: E402,F401  (MoFME: AutoModelForImageToImage)
from . import upcycled  # noqa: E402,F401  (upcycled dense decoders: AutoModelForCausalLM)
from . import moiie, mote, moe_llava  # noqa: E402,F401  (vision-language MoEs: AutoModel)
from . import xmoe  # noqa: E402,F401  (XMoE: AutoModelForCausalLM, model_type "xmoe")
