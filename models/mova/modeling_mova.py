"""MoVA: coarse-to-fine mixture of vision experts (arXiv 2404.13046; TempleX98/MoVA's `mova_llama`).

    pixel_values [n, 3, S, S] raw [0, 1] (MovaProcessor; each tower resizes and normalises for itself)
      base encoder (frozen)            --> [n, G*G, C]                          G = base grid side (48)
      expert j (frozen), if allowed    --> [n, C_j, h_j, w_j] --bilinear--> [n, G*G, C_j]
      question --sentence encoder (frozen)--> t [n, D_t]                        (or text_embeds given)
      MoV-Adapter(base, experts, t, expert_mask)  --> [n, G*G, C]               (models.mova.mov_adapter)
      downsample: RegStage -> avg pool to the token budget -> RegStage --> [n, K, C]   K = 576 (answer) / 144 (routing)
      projector mlp2x_gelu --> [n, K, D] --spliced at the <image> placeholders--> LLM (causal)

    expert_mask [n, E] bool (True = allowed) is zoo.core's external expert mask: forward puts it in the model's
    RoutingContext (with routing_context.use(expert_mask=...)), every block's gate (a zoo.core Router) routes
    with it, and each block's RoutingResult is recorded there (routing_context.result(block.gate): the gate
    weights per block, for the gallery).

Two-pass inference (`generate`):
    pass 1 (routing): every expert masked off, K = 144 tokens, the routing LoRA on (if any); the LLM answers the
        routing prompt (MovaProcessor.routing_prompt: the pool with letters, "none" allowed)
    parse: answer text -> expert mask (models.mova.coarse_routing; junk -> base only)
    pass 2 (answer): K = 576 tokens, the mask from pass 1 -> MovaGenerateOutput(sequences, chosen experts, ...)

Departures from the released code, and why
- Training works: forward takes the expert mask (routing annotations, `routing_labels`) and the question
  (text_embeds or question_input_ids) as inputs; the release's train.py passes neither (models_b.md §1b).
- The release feeds zeros for unselected experts at batch size 1 only; here an expert no sample allows is not
  run, and one some samples allow contributes exactly 0 to the others (gate weight 0), at any batch size.
- A sample that allows no expert skips the cross-attentions (b = 0) as in the release; the core router refuses
  an all-forbidden row, so that row is routed over every expert and its weights are dropped before use.
- pos_embed starts at zero (the release's init is not in our notes), so the whole adapter starts as the identity.
- The RegStage blocks end without an activation (timm's `linear_out`) and start with their last norm at zero, so
  the downsampler starts as plain average pooling; its depth (3) follows Honeybee's C-Abstractor, which the
  release's `downsample` builds on (unverified; the converter copies those keys as they are).
- Experts are resized from the processor's one raw image (at the largest input size of the pool) rather than
  preprocessed separately per expert; the release's per-expert processors also crop and pad.
- The routing LoRA is optional and acts in pass 1 only (models.mova.routing_lora); the release has none. The
  optional answer LoRA acts in pass 2 only (the paper fine-tunes the LLM instead).
- The gate's text encoder is frozen here (BERT-large in the release, the packaged MiniLM in the shipped tiny model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.layers import LayerNorm2d
from timm.models.regnet import RegStage
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from zoo.core.context import RoutingContext
from zoo.core.routing import RoutingResult, check_expert_mask
from zoo.integrations.checkpoint_keys import StrictMoeLoading
from zoo.integrations.lora_targets import LoraTargets, language_model_attention
from zoo.multimodal.causal import keep_causal
from zoo.multimodal.connectors import build_projector
from zoo.multimodal.processing import splice_image_features

from .coarse_routing import routing_mask
from .configuration_mova import MovaConfig
from .mov_adapter import MoVAdapter
from .question_encoder import QuestionEncoder
from .routing_lora import PassLoRA, routing_pass as routing_lora_pass
from .vision_experts import VisionExpert, build_expert_tower, expert_tokens, square_side


@dataclass
class MovaOutput(ModelOutput):
    """gate_weights / router_logits: one [n_images, E] tensor per adapter block (None for a block that
    routed nothing: every expert masked off, as in the routing pass)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: object | None = None
    aux_loss: torch.Tensor | None = None
    router_logits: tuple[torch.Tensor | None, ...] | None = None
    gate_weights: tuple[torch.Tensor | None, ...] | None = None
    expert_mask: torch.Tensor | None = None


@dataclass
class MovaGenerateOutput(ModelOutput):
    """What `generate` returns: the answer ids (prompt included, as transformers' generate), and pass 1's choice.

    sequences [B, L + new]; expert_mask [B, E] bool (the mask pass 2 used); chosen_experts: per sample the
    names of the allowed experts; routing_answers: pass 1's decoded text (None when the mask was given);
    routing_sequences: pass 1's new token ids (None when the mask was given)."""

    sequences: torch.Tensor | None = None
    expert_mask: torch.Tensor | None = None
    chosen_experts: list[list[str]] | None = None
    routing_answers: list[str] | None = None
    routing_sequences: torch.Tensor | None = None


class MovaDownsampler(nn.Module):
    """[n, G*G, C] -> RegStage -> adaptive average pool to the budget grid -> RegStage -> [n, K, C]."""

    def __init__(self, dim: int, depth: int, budget: int):
        super().__init__()
        self.side = square_side(budget, "MovaConfig.image_token_budget")
        stage = dict(stride=1, dilation=1, act_layer=nn.SiLU, norm_layer=LayerNorm2d, linear_out=True)
        self.s1, self.s2 = RegStage(depth, dim, dim, **stage), RegStage(depth, dim, dim, **stage)
        for block in [*self.s1.children(), *self.s2.children()]:
            block.conv3.bn._zero_init = True  # each block starts as the identity (residual + 0)
            block.zero_init_last()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *(2 * [math.isqrt(tokens.shape[1])]))
        grid = self.s2(F.adaptive_avg_pool2d(self.s1(grid), self.side))
        return grid.flatten(2).transpose(1, 2)  # [n, K, C]


class MovaPreTrainedModel(StrictMoeLoading, PreTrainedModel):
    config_class = MovaConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["AdapterBlock"]  # the language model adds its own decoder layer
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if getattr(module, "_zero_init", False):  # the layers MoVA starts at zero (mov_adapter.zero_init)
            init.zeros_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        if isinstance(module, MoVAdapter):
            init.zeros_(module.pos_embed)


class MovaForConditionalGeneration(MovaPreTrainedModel, GenerationMixin):
    """See the module docstring. `language_model`: a loaded causal LM to build around (else from text_config);
    `load_tower_weights=False` skips packaged weights (meta builds, the converter)."""

    # zoo.lora.lora_config: LoRA on the LLM's attention; the MoV-Adapter, downsampler and projector are new:
    # trained fully (the frozen towers and the question encoder stay out)
    lora_targets = LoraTargets(attention=language_model_attention(),
                               modules_to_save=("adapter", "downsample", "projector"))

    def __init__(self, config: MovaConfig, language_model: PreTrainedModel | None = None,
                 load_tower_weights: bool = True):
        super().__init__(config)
        self.vision_tower = build_expert_tower(config.vision_tower, load_weights=load_tower_weights)
        self.vision_experts = nn.ModuleList(build_expert_tower(e["tower"], load_weights=load_tower_weights)
                                            for e in config.vision_experts)
        self.grid_side = self._grid_of(self.vision_tower)
        dim = self.vision_tower.hidden_size
        self.question_encoder = None if config.question_encoder is None else QuestionEncoder(config.question_encoder, load_tower_weights)
        text_size = config.text_embed_size if self.question_encoder is None else self.question_encoder.hidden_size
        self.adapter = MoVAdapter(
            dim=dim, num_tokens=self.grid_side ** 2, expert_dims=[e.hidden_size for e in self.vision_experts],
            num_blocks=config.num_adapter_blocks, num_heads=config.adapter_num_heads,
            intermediate_size=config.adapter_intermediate_size or int(8 * dim / 3), text_size=text_size,
            gate_hidden_size=config.gate_hidden_size or dim, top_k=config.top_k_experts)
        if config.image_token_budget > self.grid_side ** 2:
            raise ValueError(f"MovaConfig.image_token_budget ({config.image_token_budget}) exceeds the base encoder's "
                             f"{self.grid_side}x{self.grid_side} grid")
        self.downsample = MovaDownsampler(dim, config.downsample_depth, config.image_token_budget)
        self.projector = build_projector(config.projector_type, dim, config.text_config.hidden_size)
        self.language_model = language_model if language_model is not None else AutoModelForCausalLM.from_config(config.text_config)
        keep_causal(self.language_model, config)
        self.routing_lora = None
        if config.routing_lora_rank is not None:
            self.routing_lora = PassLoRA(self.language_model, config.routing_lora_rank, config.routing_lora_alpha,
                                         config.routing_lora_targets, "routing", "routing_lora_targets")
        self.answer_lora = None
        if config.answer_lora_rank is not None:
            self.answer_lora = PassLoRA(self.language_model, config.answer_lora_rank, config.answer_lora_alpha,
                                        config.answer_lora_targets, "answer", "answer_lora_targets")
        self.routing_context = RoutingContext()
        self._keep_packaged_weights(load_tower_weights)
        self.post_init()
        if config.image_token_id is not None and self.generation_config is not None:
            # a placeholder is not text: generating one would ask the next step for features it cannot have
            self.generation_config.suppress_tokens = sorted(set(self.generation_config.suppress_tokens or [])
                                                            | {config.image_token_id})

    @staticmethod
    def _grid_of(tower: VisionExpert) -> int:
        """The base encoder's grid side, from one tiny forward on zeros (towers do not all expose it)."""
        device = next(tower.parameters()).device
        if device.type == "meta":
            with torch.device("meta"):
                out = tower(torch.zeros(1, 3, tower.image_size, tower.image_size))
        else:
            out = tower(torch.zeros(1, 3, tower.image_size, tower.image_size, device=device))
        if out.shape[-1] != out.shape[-2]:
            raise ValueError(f"MovaConfig.vision_tower: the base encoder's map is {tuple(out.shape[-2:])}, not square")
        return int(out.shape[-1])

    def _keep_packaged_weights(self, loaded: bool) -> None:
        """post_init() re-initialises every module not flagged as initialised; packaged tower weights must survive it."""
        if not loaded:
            return
        specs = [self.config.vision_tower, *(e["tower"] for e in self.config.vision_experts)]
        for spec, tower in zip(specs, [self.vision_tower, *self.vision_experts]):
            if spec.get("weights") is not None and not any(p.is_meta for p in tower.parameters()):
                for module in tower.tower.modules():
                    module._is_hf_initialized = True

    # -- pieces ----------------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def train(self, mode: bool = True):
        super().train(mode)
        for module in (self.vision_tower, *self.vision_experts, self.question_encoder):
            if module is not None:
                module.eval()  # frozen
        return self

    def adapter_gates(self) -> list[nn.Module]:
        return [block.gate for block in self.adapter.blocks]

    # -- inputs ----------------------------------------------------------------------------------------------
    def check_pixels(self, pixel_values) -> torch.Tensor:
        name = f"{type(self).__name__}: pixel_values"
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"{name} must be a tensor [n_images, 3, H, W] (MovaProcessor makes it), got "
                            f"{type(pixel_values).__name__}")
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3 or min(pixel_values.shape[2:]) < 1:
            raise ValueError(f"{name} must be [n_images, 3, H, W], got {tuple(pixel_values.shape)}")
        if not pixel_values.is_floating_point():
            raise TypeError(f"{name} must be floating point (raw pixels in [0, 1]), got dtype {pixel_values.dtype}")
        if not bool(torch.isfinite(pixel_values).all()):
            raise ValueError(f"{name} holds NaN or inf")
        return pixel_values

    def resolve_expert_mask(self, expert_mask, num_images: int, device) -> torch.Tensor:
        """None (every expert allowed) | bool [E] | bool [n_images, E] -> bool [n_images, E]."""
        num_experts = self.config.num_experts
        if expert_mask is None:
            return torch.ones(num_images, num_experts, dtype=torch.bool, device=device)
        check_expert_mask(expert_mask)
        if expert_mask.dtype != torch.bool:
            raise TypeError(f"{type(self).__name__}: expert_mask must be a bool tensor (True = allowed; MoVA's routing "
                            f"choice is binary), got dtype {expert_mask.dtype}")
        if expert_mask.shape == (num_experts,):
            expert_mask = expert_mask.expand(num_images, num_experts)
        if tuple(expert_mask.shape) != (num_images, num_experts):
            raise ValueError(f"{type(self).__name__}: expert_mask must have shape ({num_experts},) or ({num_images}, "
                             f"{num_experts}) = (images, experts {self.config.expert_names}), got {tuple(expert_mask.shape)}")
        return expert_mask.to(device)

    def question_embeddings(self, num_images: int, text_embeds=None, question_input_ids=None,
                            question_attention_mask=None) -> torch.Tensor:
        """-> t [n_images, D_t], the gate's text input (one question per image)."""
        if text_embeds is not None:
            size = self.adapter.blocks[0].gate.hidden_size - self.vision_tower.hidden_size
            if not isinstance(text_embeds, torch.Tensor) or not text_embeds.is_floating_point() \
                    or tuple(text_embeds.shape) != (num_images, size):
                raise ValueError(f"{type(self).__name__}: text_embeds must be a float tensor [n_images, {size}] = "
                                 f"({num_images}, {size}), got {getattr(text_embeds, 'shape', type(text_embeds).__name__)}")
            return text_embeds
        if question_input_ids is None or self.question_encoder is None:
            need = "question_input_ids (MovaProcessor(..., questions=...))" if self.question_encoder is not None else \
                "text_embeds (this config has no question_encoder)"
            raise ValueError(f"{type(self).__name__}: the gate reads the question: pass {need}, one per image")
        if question_input_ids.shape[0] != num_images:
            raise ValueError(f"{type(self).__name__}: {question_input_ids.shape[0]} questions for {num_images} images "
                             "(the gate needs one question per image)")
        return self.question_encoder(question_input_ids, question_attention_mask)

    # -- the vision side ---------------------------------------------------------------------------------------
    def image_features(self, pixel_values, expert_mask=None, text_embeds=None, question_input_ids=None,
                       question_attention_mask=None, routing_pass: bool = False):
        """-> (image tokens for the LLM [n, K, D], one RoutingResult per adapter block or None, the mask used [n, E])."""
        pixels = self.check_pixels(pixel_values)
        n = pixels.shape[0]
        if routing_pass:  # pass 1 sees the base encoder alone (the release masks every expert off)
            mask = torch.zeros(n, self.config.num_experts, dtype=torch.bool, device=pixels.device)
        else:
            mask = self.resolve_expert_mask(expert_mask, n, pixels.device)
        with self.routing_context.use(expert_mask=mask):
            mask = self.routing_context.current().expert_mask  # what every gate of this call routes with
            base = expert_tokens(self.vision_tower(pixels), self.grid_side)  # [n, G*G, C]
            needed = mask.any(dim=0).tolist()
            experts = [expert_tokens(expert(pixels), self.grid_side) if use else None  # [n, G*G, C_j]
                       for expert, use in zip(self.vision_experts, needed)]
            text = self.question_embeddings(n, text_embeds, question_input_ids, question_attention_mask) \
                if any(needed) else None
            dtype = self.adapter.pos_embed.dtype
            fused, routings = self.adapter(base.to(dtype), experts, None if text is None else text.to(dtype), mask)
            for gate, routing in zip(self.adapter_gates(), routings):
                if routing is not None:
                    self.routing_context.record(gate, routing)
        tokens = self.downsample(fused)  # [n, K, C]
        if routing_pass:
            side = math.isqrt(self.config.num_routing_tokens)
            grid = tokens.transpose(1, 2).reshape(n, -1, *(2 * [math.isqrt(tokens.shape[1])]))
            tokens = F.adaptive_avg_pool2d(grid, side).flatten(2).transpose(1, 2)  # [n, 144, C]
        return self.projector(tokens), routings, mask

    def num_image_tokens(self, routing_pass: bool = False) -> int:
        return self.config.num_routing_tokens if routing_pass else self.config.image_token_budget

    # -- forward -----------------------------------------------------------------------------------------------
    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache: bool | None = None, expert_mask=None, text_embeds=None,
                question_input_ids=None, question_attention_mask=None, routing_pass: bool = False,
                logits_to_keep: int = 0, **kwargs) -> MovaOutput:
        """input_ids [B, L] with config.image_token_id placeholders (num_routing_tokens per image when
        routing_pass, image_token_budget otherwise); pixel_values [B, 3, S, S] raw [0, 1], on the prefill step
        only; expert_mask [B, E] or [E] bool (None: every expert allowed); the question as text_embeds [B, D_t] or
        question_input_ids / question_attention_mask [B, Lq]; labels [B, L] (-100 = not supervised)."""
        kwargs.pop("output_router_logits", None)  # the gate logits are always in the output
        routings, mask = [], None
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("pass input_ids (with pixel_values for the image placeholders) or inputs_embeds")
            if self.config.image_token_id is None:
                raise ValueError("MovaConfig.image_token_id is not set (the processor's <image> token id)")
            is_image = input_ids == self.config.image_token_id
            embeds = self.get_input_embeddings()(input_ids.masked_fill(is_image, 0))  # [B, L, D]
            features = None
            if pixel_values is not None and pixel_values.shape[0] > 0:
                features, routings, mask = self.image_features(pixel_values, expert_mask, text_embeds, question_input_ids,
                                                               question_attention_mask, routing_pass)
            inputs_embeds, _ = splice_image_features(input_ids, embeds, features, self.config.image_token_id)
        elif pixel_values is not None:
            raise ValueError("pass input_ids with pixel_values (the image tokens are spliced at its placeholders), "
                             "not inputs_embeds")
        if use_cache is None and labels is not None:
            use_cache = False  # a training / scoring forward keeps no KV cache
        with routing_lora_pass(routing_pass):
            outputs = self.language_model.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                                position_ids=position_ids, past_key_values=past_key_values,
                                                use_cache=use_cache, **kwargs)
            hidden = outputs.last_hidden_state  # [B, L, D]
            lm_head = self.get_output_embeddings()
            loss = None
            if labels is not None:
                targets = labels[:, 1:]
                keep = targets != -100  # only the supervised positions reach the vocabulary head
                if not keep.any():
                    raise ValueError("labels supervise no token (all -100)")
                logits = lm_head(hidden[:, :-1][keep]).float()  # [n_supervised, V]
                loss = F.cross_entropy(logits, targets[keep])
            else:
                logits = lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        return MovaOutput(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, expert_mask=mask,
            aux_loss=None if loss is None else loss.new_zeros(()),  # MoVA's gate has no balance loss
            router_logits=tuple(_or_none(r, "logits") for r in routings) if routings else None,
            gate_weights=tuple(_or_none(r, "weights") for r in routings) if routings else None,
        )

    # -- two-pass generation -----------------------------------------------------------------------------------
    def _saved_tokenizer(self):
        if not hasattr(self, "_tokenizer_beside_model"):
            self._tokenizer_beside_model = _tokenizer_beside(getattr(self.config, "_name_or_path", ""))
        return self._tokenizer_beside_model

    @torch.no_grad()
    def generate(self, input_ids=None, pixel_values=None, attention_mask=None, routing_input_ids=None,
                 routing_attention_mask=None, expert_mask=None, tokenizer=None, text_embeds=None,
                 question_input_ids=None, question_attention_mask=None, **kwargs):
        """Pass 1 (unless expert_mask is given or config.coarse_routing is False): greedy, up to
        config.routing_max_new_tokens, on routing_input_ids (MovaProcessor's routing prompt); its answer,
        decoded with `tokenizer`, becomes the expert mask. Pass 2: transformers' generate on input_ids with that
        mask and **kwargs. -> MovaGenerateOutput, or the answer pass's sequences alone when the caller passes
        `return_dict_in_generate=False` explicitly (transformers' pipelines do). `tokenizer=None` with coarse routing:
        the tokenizer saved beside the model (its `from_pretrained` folder), as a pipeline has it."""
        plain = kwargs.get("return_dict_in_generate") is False
        question = dict(text_embeds=text_embeds, question_input_ids=question_input_ids,
                        question_attention_mask=question_attention_mask)
        if input_ids is None:
            raise ValueError("MovaForConditionalGeneration.generate needs input_ids (MovaProcessor's answer prompt)")
        answers = routing_new = None
        if expert_mask is None and self.config.coarse_routing:
            if routing_input_ids is None:
                raise ValueError("coarse routing needs routing_input_ids (MovaProcessor(images=..., questions=...) makes "
                                 "them), or pass expert_mask to skip the routing pass")
            tokenizer = tokenizer or self._saved_tokenizer()
            if tokenizer is None:
                raise ValueError("coarse routing reads the LLM's routing answer: pass tokenizer= (the processor's "
                                 "tokenizer), or pass expert_mask to skip the routing pass")
            routed = GenerationMixin.generate(
                self, input_ids=routing_input_ids, attention_mask=routing_attention_mask, pixel_values=pixel_values,
                routing_pass=True, max_new_tokens=self.config.routing_max_new_tokens, do_sample=False, num_beams=1,
                **{k: v for k, v in question.items() if v is not None})
            routing_new = routed[:, routing_input_ids.shape[1]:]
            answers = tokenizer.batch_decode(routing_new, skip_special_tokens=True)
            expert_mask = routing_mask(answers, self.config.expert_letters, self.config.expert_names,
                                       self.config.max_routed_experts).to(input_ids.device)
        elif expert_mask is None:
            expert_mask = torch.ones(input_ids.shape[0], self.config.num_experts, dtype=torch.bool, device=input_ids.device)
        else:
            expert_mask = self.resolve_expert_mask(expert_mask, input_ids.shape[0], input_ids.device)
        sequences = GenerationMixin.generate(self, input_ids=input_ids, attention_mask=attention_mask,
                                             pixel_values=pixel_values, expert_mask=expert_mask,
                                             **{k: v for k, v in question.items() if v is not None}, **kwargs)
        if plain:
            return sequences
        names = self.config.expert_names
        return MovaGenerateOutput(
            sequences=sequences if isinstance(sequences, torch.Tensor) else sequences.sequences,
            expert_mask=expert_mask, routing_answers=answers, routing_sequences=routing_new,
            chosen_experts=[[names[j] for j in row.nonzero().flatten().tolist()] for row in expert_mask.cpu()])


def _tokenizer_beside(folder: str):
    """The tokenizer saved in a model folder, or None (no folder, no tokenizer files)."""
    from pathlib import Path

    if not folder or not Path(folder, "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _or_none(routing: RoutingResult | None, what: str):
    if routing is None:
        return None
    return routing.logits if what == "logits" else routing.dense_weights()


__all__ = ["MovaDownsampler", "MovaForConditionalGeneration", "MovaGenerateOutput", "MovaOutput", "MovaPreTrainedModel"]
