"""Images and text into one token sequence for an LLM whose routers read a per-token modality id.

    images  --load_image/preprocess-->  pixel_values [n_img, 3, S, S]
    text with "<image>"  --processor-->  input_ids [B, L]: each "<image>" expanded to N placeholder ids
    tower + connector(pixel_values)  ->  image_features [n_img, N, H]
    splice_image_features(...)       ->  inputs_embeds [B, L, H], modality_ids [B, L] (text 0, image 1)
    splice_features(..., modality)   the same for any modality (audio: zoo.multimodal.speech_processing)

Bad input never reaches the model: a file that is not an image, a wrong number of images for the
placeholders, or an image beyond MAX_IMAGE_PIXELS each raise a ValueError naming the problem.
Images larger than MAX_IMAGE_SIDE on their longer side are shrunk first (they are resized to the
tower's input size anyway; this bounds memory while decoding).
"""
from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import PROCESSOR_NAME

from ..core.modalities import MODALITY_IDS
from ..integrations.assets import IMAGENET_MEAN_STD

IMAGE_TOKEN = "<image>"
MAX_IMAGE_SIDE = 4096  # longer side beyond this is shrunk before anything else
MAX_IMAGE_PIXELS = 64_000_000  # beyond this a file is refused (PIL's decompression-bomb guard)
DEFAULT_IMAGE_SIZE = 224


def load_image(image) -> Image.Image:
    """PIL image, path, bytes or HxWx3 uint8 array -> RGB PIL image, shrunk to MAX_IMAGE_SIDE."""
    if isinstance(image, (str, os.PathLike)):
        if not pathlib.Path(image).is_file():
            raise ValueError(f"image file {str(image)!r} does not exist")
        image = pathlib.Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray)):
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
        try:
            image = Image.open(io.BytesIO(image))
            image.draft("RGB", (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))  # JPEG: decode already shrunk
            image.load()
        except UnidentifiedImageError:
            raise ValueError("the uploaded file is not an image PIL can read") from None
        except Image.DecompressionBombError:
            raise ValueError(f"image has more than {MAX_IMAGE_PIXELS:,} pixels; refused") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise ValueError(f"an image array must be HxWx3 (or 4) uint8, got shape {image.shape} dtype {image.dtype}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"expected an image (PIL image, path, bytes or array), got {type(image).__name__}")
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise ValueError(f"image is {image.width}x{image.height}, more than {MAX_IMAGE_PIXELS:,} pixels; refused")
    if max(image.size) > MAX_IMAGE_SIDE:
        image = image.copy()
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    return image.convert("RGB")


def preprocess_images(images: Sequence, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """-> pixel_values [n, 3, size, size] float32: bicubic resize (no crop), scale to [0, 1], normalise."""
    pixels = []
    for image in images:
        image = load_image(image).resize((size, size), Image.BICUBIC)
        pixels.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    if not pixels:
        return torch.empty(0, 3, size, size)
    stacked = torch.stack(pixels)
    return (stacked - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def splice_features(
    input_ids: torch.Tensor,  # [B, L], this modality's placeholders = placeholder_token_id
    text_embeds: torch.Tensor,  # [B, L, H], embeddings of the ids (placeholder rows are overwritten)
    features,  # [n, N, H] | [P, H] | list of [N_i, H] | None, in reading order
    placeholder_token_id: int,
    modality: str,
    modality_ids: torch.Tensor | None = None,  # [B, L] from an earlier splice (another modality), else all text
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write one modality's features into its placeholder positions and mark them with that modality's id.

    Any modality (image, audio, video): call once per modality, passing the previous modality_ids on.
    -> (inputs_embeds [B, L, H], modality_ids [B, L]).
    """
    if modality not in MODALITY_IDS:
        raise ValueError(f"modality {modality!r} unknown; known: {sorted(MODALITY_IDS)}")
    is_placeholder = input_ids == placeholder_token_id  # [B, L]
    placeholders = int(is_placeholder.sum())
    if features is None:
        flat, described = None, f"no {modality} features were given"
    elif isinstance(features, (list, tuple)):
        flat = torch.cat(list(features)) if features else None
        sizes = [int(f.shape[0]) for f in features]
        described = f"{len(sizes)} {modality} item(s) with {sizes} tokens = {sum(sizes)} {modality} features were given"
    elif features.dim() == 3:
        flat = features.reshape(-1, features.shape[-1])
        described = (f"{features.shape[0]} {modality}(s) x {features.shape[1]} tokens = {flat.shape[0]} "
                     f"{modality} features were given")
    elif features.dim() == 2:
        flat, described = features, f"{features.shape[0]} {modality} features were given"
    else:
        raise ValueError(f"{modality} features must be [n, N, H], [P, H] or a list of [N_i, H], "
                         f"got shape {tuple(features.shape)}")
    provided = 0 if flat is None else flat.shape[0]
    if placeholders != provided:
        raise ValueError(f"the text has {placeholders} {modality} placeholder tokens but {described} "
                         f"(each placeholder in the text is expanded by the processor, one id per feature)")
    if modality_ids is None:
        modality_ids = torch.full_like(input_ids, MODALITY_IDS["text"])
    elif modality_ids.shape != input_ids.shape:
        raise ValueError(f"modality_ids has shape {tuple(modality_ids.shape)}, input_ids {tuple(input_ids.shape)}")
    else:
        modality_ids = modality_ids.clone()
    if provided == 0:
        return text_embeds, modality_ids
    if flat.shape[-1] != text_embeds.shape[-1]:
        raise ValueError(f"{modality} features are {flat.shape[-1]}-d, the text embeddings {text_embeds.shape[-1]}-d")
    modality_ids[is_placeholder] = MODALITY_IDS[modality]
    embeds = text_embeds.masked_scatter(is_placeholder[..., None], flat.to(text_embeds.dtype))
    return embeds, modality_ids


def splice_image_features(
    input_ids: torch.Tensor,  # [B, L], image placeholders = image_token_id
    text_embeds: torch.Tensor,  # [B, L, H], embeddings of the text ids (placeholder rows are overwritten)
    image_features: torch.Tensor | None,  # [n_img, N, H], in reading order
    image_token_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write image features into the placeholder positions; -> (inputs_embeds [B, L, H], modality_ids [B, L])."""
    return splice_features(input_ids, text_embeds, image_features, image_token_id, "image")


class VisionLanguageImageProcessor(BaseImageProcessor):
    """Images (PIL, path, bytes, HxWx3 uint8 array) -> pixel_values [n, 3, S, S]: shrink to MAX_IMAGE_SIDE,
    bicubic resize to the tower's square input (no crop), scale to [0, 1], normalise with its mean/std."""

    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = DEFAULT_IMAGE_SIZE, image_mean=IMAGENET_MEAN_STD[0],
                 image_std=IMAGENET_MEAN_STD[1], **kwargs):
        super().__init__(**kwargs)
        if not isinstance(image_size, int) or image_size <= 0:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), std > 0; got {image_mean}, {image_std}")
        self.image_size = image_size
        self.image_mean, self.image_std = [float(m) for m in image_mean], [float(s) for s in image_std]

    def preprocess(self, images, **kwargs) -> BatchFeature:
        """-> {"pixel_values": float32 tensor} (torch only: the towers are torch modules)."""
        images = [] if images is None else (list(images) if isinstance(images, (list, tuple)) else [images])
        pixels = preprocess_images(images, self.image_size, self.image_mean, self.image_std)
        return BatchFeature({"pixel_values": pixels})


class VisionLanguageProcessor(ProcessorMixin):
    """(images, text with <image>, chat template) -> input_ids, attention_mask, pixel_values.

    A transformers processor (tokenizer + VisionLanguageImageProcessor): `save_pretrained(d)` writes
    processor_config.json, chat_template.jinja and the tokenizer files, and after `import zoo`
    `AutoProcessor.from_pretrained(d)` rebuilds it for every VL model type (register_processor).
    The tokenizer gets IMAGE_TOKEN as an added special token; each occurrence in the text is
    expanded to `num_image_tokens` copies so the model can splice the features 1:1.

    `VisionLanguageProcessor(tokenizer, image_size, image_mean, image_std, num_image_tokens=...)`
    (an int in the image_processor slot) builds the image processor from those three values.
    """

    image_token = IMAGE_TOKEN

    def __init__(self, tokenizer=None, image_processor=None, image_mean=None, image_std=None,
                 num_image_tokens: int = 1, chat_template: str | None = None, **kwargs):
        if tokenizer is None:
            raise ValueError("VisionLanguageProcessor needs a tokenizer")
        if image_processor is None or isinstance(image_processor, int):
            size = DEFAULT_IMAGE_SIZE if image_processor is None else image_processor
            given = {k: v for k, v in (("image_mean", image_mean), ("image_std", image_std)) if v is not None}
            image_processor = VisionLanguageImageProcessor(size, **given)
        elif image_mean is not None or image_std is not None:
            raise ValueError("image_mean/image_std are given twice: pass them in the image processor only")
        if not isinstance(num_image_tokens, int) or num_image_tokens <= 0:
            raise ValueError(f"num_image_tokens must be positive, got {num_image_tokens}")
        super().__init__(tokenizer=tokenizer, image_processor=image_processor, chat_template=chat_template, **kwargs)
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.num_image_tokens = num_image_tokens

    # the tower's input format lives in the image processor; these read it for the pipelines
    image_size = property(lambda self: self.image_processor.image_size)
    image_mean = property(lambda self: tuple(self.image_processor.image_mean))
    image_std = property(lambda self: tuple(self.image_processor.image_std))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        path = pathlib.Path(pretrained_model_name_or_path)
        if path.is_dir() and not (path / PROCESSOR_NAME).is_file():
            raise FileNotFoundError(f"{path / PROCESSOR_NAME} not found: {path} holds no saved VisionLanguageProcessor "
                                    "(save one with processor.save_pretrained)")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def prompt(self, question: str, answer: str | None = None) -> str:
        """One user turn with one image; the answer (training) follows the assistant header."""
        messages = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"}]
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )
        return text if answer is None else text + answer

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return IMAGE_TOKEN * self.num_image_tokens

    def expand_image_tokens(self, texts: Sequence[str]) -> list[str]:
        """Each IMAGE_TOKEN -> `num_image_tokens` placeholders: the text `__call__` tokenises (data
        pipelines that tokenise without images or padding use this, so there is one expansion)."""
        return [t.replace(IMAGE_TOKEN, self.replace_image_token({}, i)) for i, t in enumerate(texts)]

    def __call__(self, images: Sequence | None = None, text: str | Sequence[str] = "", padding_side: str = "right",
                 **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        images = [] if images is None else ([images] if not isinstance(images, (list, tuple)) else list(images))
        placeholders = sum(t.count(IMAGE_TOKEN) for t in texts)
        if placeholders != len(images):
            raise ValueError(f"{len(images)} image(s) given but the text has {placeholders} {IMAGE_TOKEN} placeholder(s)")
        expanded = self.expand_image_tokens(texts)
        self.tokenizer.padding_side = padding_side
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        batch = self.tokenizer(expanded, return_tensors="pt", padding=True, add_special_tokens=False,
                               **tokenizer_call_kwargs(kwargs, type(self).__name__))
        batch["pixel_values"] = self.image_processor(images)["pixel_values"]
        return BatchFeature(data=dict(batch))  # .to(dtype=...) casts the pixels only, as pipelines expect


def tokenizer_call_kwargs(kwargs: dict, owner: str) -> dict:
    """The keyword arguments a processor passes on to its tokenizer, minus the ones it fixes itself: tensors
    are PyTorch (`return_tensors="pt"`, what transformers' pipelines ask for; anything else is refused by
    name) and padded to the longest (`padding=True` / "longest", what pipelines pass; any other padding is refused,
    not ignored), so a pipeline's own `return_tensors` / `padding` are welcome."""
    kwargs = dict(kwargs)
    return_tensors = kwargs.pop("return_tensors", "pt")
    if return_tensors != "pt":
        raise ValueError(f"{owner} returns PyTorch tensors only: return_tensors must be 'pt', got {return_tensors!r}")
    padding = kwargs.pop("padding", True)
    if padding not in (True, "longest"):
        raise ValueError(f"{owner} pads every batch to its longest text: padding must be True or 'longest', "
                         f"got {padding!r}")
    return kwargs


def register_processor(config_class) -> None:
    """Make AutoProcessor / AutoImageProcessor build the VL processor for this model type."""
    from transformers import AutoImageProcessor, AutoProcessor

    AutoProcessor.register(config_class, VisionLanguageProcessor, exist_ok=True)
    # one class for both backends: resizing is PIL's either way (and no "backend missing" fallback warning)
    backends = {"pil": VisionLanguageImageProcessor, "torchvision": VisionLanguageImageProcessor}
    AutoImageProcessor.register(config_class, image_processor_classes=backends, exist_ok=True)
