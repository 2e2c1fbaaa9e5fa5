"""MovaProcessor: (images, questions) -> the two prompts of MoVA's two passes, the gate's question tokens, pixels.

    images     --VisionLanguageImageProcessor (raw [0, 1], at the largest input size of the pool)--> pixel_values [n, 3, S, S]
    questions  --answer prompt (chat template, <image> x num_image_tokens)-->           input_ids, attention_mask
               --routing prompt (<image> x num_routing_tokens, the pool A.., "none")--> routing_input_ids, routing_attention_mask
               --"question 0: <q>\\n\\n" (the release's gate text), question tokenizer--> question_input_ids, question_attention_mask

    batch = processor(images=image, questions="what colour is the shape?")
    out = model.generate(**batch, tokenizer=processor.tokenizer, max_new_tokens=8)   # models.mova.modeling_mova

Every tower resizes and normalises the raw pixels for itself, so one image tensor serves the base encoder and
every expert. `MovaProcessor.for_model(model, tokenizer, ...)` reads the pool, the token counts and the image
size from a built model. After `import zoo`, `AutoProcessor.from_pretrained(folder)` rebuilds it (the question
tokenizer is saved in the `question_tokenizer/` subfolder).
"""
from __future__ import annotations

from collections.abc import Sequence

from zoo.multimodal.processing import IMAGE_TOKEN, VisionLanguageImageProcessor, VisionLanguageProcessor

from .coarse_routing import MAX_ROUTED_EXPERTS, parse_routing_answer
from .configuration_mova import expert_letters

# the release's routing instruction (models_b.md §1a; its exact wording around these phrases is not in our notes)
ROUTING_PROMPT = ("{image}\nHere are some vision models that can look at this image:\n{pool}\n"
                  "Select the most {k} suitable models to answer the question below. Answer with the model's letter "
                  "from the given choices directly, separated by commas. If no models are selected, just answer "
                  "'none'.\nQuestion: {question}")
QUESTION_TEMPLATE = "question 0: {question}\n\n"  # the gate's text, as the release formats it
RAW_MEAN, RAW_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # pixels stay in [0, 1]: each tower normalises its own way


def _as_list(value, what: str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or any(not isinstance(v, str) for v in value):
        raise TypeError(f"MovaProcessor: {what} must be a str or a list of str, got {value!r:.80}")
    return list(value)


class MovaProcessor(VisionLanguageProcessor):
    """See the module docstring.

    Args:
        tokenizer: the LLM's tokenizer (gets the <image> token).
        image_processor: a VisionLanguageImageProcessor with mean 0 / std 1 (raw pixels), or an int (its size).
        question_tokenizer: the gate's sentence-encoder tokenizer (None: the LLM's tokenizer, for models whose
            text encoder shares its vocabulary or that take text_embeds).
        num_image_tokens (`int`): LLM tokens per image in the answer pass (MovaConfig.image_token_budget).
        num_routing_tokens (`int`): LLM tokens per image in the routing pass (MovaConfig.num_routing_tokens).
        expert_names, expert_descriptions (`list[str]`): the pool as the routing prompt lists it (letters A, B, ...).
        max_routed_experts (`int`, 3): how many the routing prompt asks for (and the parser keeps).
    """

    def __init__(self, tokenizer=None, image_processor=None, question_tokenizer=None, num_image_tokens: int = 1,
                 num_routing_tokens: int = 1, expert_names: Sequence[str] | None = None,
                 expert_descriptions: Sequence[str] | None = None, max_routed_experts: int = MAX_ROUTED_EXPERTS,
                 chat_template: str | None = None, **kwargs):
        names, descriptions = list(expert_names or []), list(expert_descriptions or [])
        if not names:
            raise ValueError("MovaProcessor.expert_names is empty: the routing prompt needs the expert pool "
                             "(MovaProcessor.for_model(model, tokenizer) reads it from the model)")
        if len(descriptions) != len(names) or any(not isinstance(x, str) or not x for x in names + descriptions):
            raise ValueError(f"MovaProcessor: one non-empty description per expert is needed, got names {names} and "
                             f"descriptions {descriptions}")
        for name, value in (("num_routing_tokens", num_routing_tokens), ("max_routed_experts", max_routed_experts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MovaProcessor.{name} must be a positive integer, got {value!r}")
        if image_processor is None:
            image_processor = VisionLanguageImageProcessor(image_mean=RAW_MEAN, image_std=RAW_STD)
        elif isinstance(image_processor, int):
            image_processor = VisionLanguageImageProcessor(image_processor, image_mean=RAW_MEAN, image_std=RAW_STD)
        super().__init__(tokenizer, image_processor, num_image_tokens=num_image_tokens, chat_template=chat_template,
                         question_tokenizer=question_tokenizer if question_tokenizer is not None else tokenizer, **kwargs)
        self.num_routing_tokens = num_routing_tokens
        self.expert_names, self.expert_descriptions = names, descriptions
        self.max_routed_experts = max_routed_experts

    @classmethod
    def for_model(cls, model, tokenizer, question_tokenizer=None, chat_template: str | None = None) -> "MovaProcessor":
        """The processor of a built MovaForConditionalGeneration: its pool, token counts, largest tower input."""
        config = model.config
        size = max(tower.image_size for tower in [model.vision_tower, *model.vision_experts])
        return cls(tokenizer, size, question_tokenizer, num_image_tokens=config.image_token_budget,
                   num_routing_tokens=config.num_routing_tokens, expert_names=config.expert_names,
                   expert_descriptions=[e["description"] for e in config.vision_experts],
                   max_routed_experts=config.max_routed_experts, chat_template=chat_template)

    @property
    def expert_letters(self) -> list[str]:
        return expert_letters(len(self.expert_names))

    # -- prompts (the formats live here) ------------------------------------------------------------------------
    def pool_text(self) -> str:
        return "\n".join(f"{letter}. {name}: {description}" for letter, name, description
                         in zip(self.expert_letters, self.expert_names, self.expert_descriptions))

    def routing_prompt(self, question: str) -> str:
        content = ROUTING_PROMPT.format(image=IMAGE_TOKEN, pool=self.pool_text(), k=self.max_routed_experts,
                                        question=question)
        return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=self.chat_template,
                                                  add_generation_prompt=True, tokenize=False)

    def parse_routing_answer(self, text: str) -> list[int]:
        return parse_routing_answer(text, self.expert_letters, self.expert_names, self.max_routed_experts)

    # -- batches ---------------------------------------------------------------------------------------------------
    def __call__(self, images=None, text=None, questions=None, padding_side: str = "left", **kwargs):
        """questions (one per text / image) give the answer prompt when `text` is None, plus the routing prompt
        and the gate's question tokens; `text` alone (training: prompt + answer) gives the answer pass only.
        Texts without any <image> placeholder, one per image, are questions (transformers' image-text-to-text
        pipeline passes the user's question as `text`)."""
        questions = _as_list(questions, "questions")
        texts = _as_list(text, "text")
        n_images = 0 if images is None else len(images) if isinstance(images, (list, tuple)) else 1
        if texts and not questions and len(texts) == n_images and not any(IMAGE_TOKEN in t for t in texts):
            questions, texts = texts, []
        texts = texts or [self.prompt(q) for q in questions]
        if not texts:
            raise ValueError("MovaProcessor: pass questions= (or text= with <image> placeholders)")
        if questions and len(questions) != len(texts):
            raise ValueError(f"MovaProcessor: {len(questions)} questions for {len(texts)} texts (one each)")
        batch = super().__call__(images=images, text=texts, padding_side=padding_side, **kwargs)
        if questions:
            routing = [self.routing_prompt(q).replace(IMAGE_TOKEN, IMAGE_TOKEN * self.num_routing_tokens) for q in questions]
            routed = self.tokenizer(routing, return_tensors="pt", padding=True, add_special_tokens=False)
            batch["routing_input_ids"], batch["routing_attention_mask"] = routed["input_ids"], routed["attention_mask"]
            tokenizer = self.question_tokenizer
            tokenizer.padding_side = "right"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            asked = tokenizer([QUESTION_TEMPLATE.format(question=q) for q in questions], return_tensors="pt", padding=True)
            batch["question_input_ids"], batch["question_attention_mask"] = asked["input_ids"], asked["attention_mask"]
        return batch

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values", "routing_input_ids", "routing_attention_mask",
                "question_input_ids", "question_attention_mask"]


def register_mova_processor(config_class) -> None:
    """AutoProcessor -> MovaProcessor; AutoImageProcessor -> its image processor."""
    from transformers import AutoImageProcessor, AutoProcessor

    backends = {"pil": VisionLanguageImageProcessor, "torchvision": VisionLanguageImageProcessor}
    AutoImageProcessor.register(config_class, image_processor_classes=backends, exist_ok=True)
    AutoProcessor.register(config_class, MovaProcessor, exist_ok=True)


__all__ = ["MovaProcessor", "QUESTION_TEMPLATE", "ROUTING_PROMPT", "register_mova_processor"]
