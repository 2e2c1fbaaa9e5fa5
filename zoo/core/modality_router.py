"""Modality-guided routing: one gate per modality over that modality's own experts, plus a shared
pool every modality reaches; each token is routed by the gate of its modality id."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .losses import load_balancing_loss, router_z_loss
from .modalities import MODALITY_IDS
from .routing import Router, top_k_selection
from .validation import FieldTypeError, check_bool, check_id_tensor, check_indices, check_positive_int


class ModalityRouter(Router):
    """Modality-guided routing (intra-/inter-modality experts, MoMa-style groups).

    Each modality has its own gate over its own experts plus a shared pool that every modality can
    reach; a token is routed by the gate of its modality (top-k, optionally renormalised). One
    balance loss per modality gate over its own tokens and experts; `load_balance` is their sum.

        modality_experts = {"image": [0], "text": [3]}, shared_experts = [1, 2]   # E = 4
    """

    has_shared_gate = False

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        modality_experts: Mapping[str, Sequence[int]],
        shared_experts: Sequence[int] = (),
        top_k: int = 2,
        normalize: bool = True,
        jitter: float = 0.0,
        capacity_factor: float | None = None,
        min_capacity: int = 4,
    ):
        super().__init__(hidden_size, num_experts, jitter, capacity_factor, min_capacity)
        check_positive_int(self, top_k=top_k)
        check_bool(self, normalize=normalize)
        if not isinstance(modality_experts, Mapping):
            raise FieldTypeError(f"{type(self).__name__}.modality_experts must map modality names to expert lists, "
                                 f"got {modality_experts!r}")
        if not modality_experts:
            raise ValueError("modality_experts must name at least one modality")
        shared = sorted(set(check_indices(self, "shared_experts", shared_experts, size=num_experts)))
        seen: dict[int, str] = {e: "shared_experts" for e in shared}
        self.allowed: dict[str, list[int]] = {}
        for name, experts in modality_experts.items():
            if not isinstance(name, str) or name not in MODALITY_IDS:
                raise ValueError(f"modality_experts: unknown modality {name!r}; known: {sorted(MODALITY_IDS)}")
            own = sorted(set(check_indices(self, f"modality_experts[{name!r}]", experts, size=num_experts)))
            if not own:
                raise ValueError(f"modality_experts[{name!r}] is empty: every modality needs its own experts "
                                 "(the shared pool is shared_experts)")
            for e in own:
                if e in seen:
                    raise ValueError(f"modality_experts[{name!r}] reuses expert {e}, already in {seen[e]}")
                seen[e] = f"modality_experts[{name!r}]"
            allowed = sorted(own + shared)
            if top_k > len(allowed):
                raise ValueError(f"top_k ({top_k}) exceeds the {len(allowed)} experts modality {name!r} can reach")
            self.allowed[name] = allowed
        for e in seen:
            if not 0 <= e < num_experts:
                raise ValueError(f"expert index {e} in {seen[e]} is outside [0, {num_experts})")
        unused = sorted(set(range(num_experts)) - set(seen))
        if unused:
            raise ValueError(f"experts {unused} are reachable from no modality (give them to a modality or shared_experts)")
        self.top_k = top_k
        self.normalize = normalize
        self.slots_per_token = top_k
        # one gate per modality, [R_m, H] each
        self.gates = nn.ModuleDict({name: nn.Linear(hidden_size, len(a), bias=False) for name, a in self.allowed.items()})
        for gate in self.gates.values():
            nn.init.normal_(gate.weight, std=0.02)

    def _modality_rows(self, modality_ids: torch.Tensor | None, num_tokens: int):
        if modality_ids is None:
            raise ValueError("ModalityRouter needs modality_ids ([T] modality id per token)")
        check_id_tensor(None, "modality_ids", modality_ids, (num_tokens,))
        known = torch.tensor([MODALITY_IDS[n] for n in self.allowed], device=modality_ids.device)
        stray = modality_ids[~torch.isin(modality_ids, known)]
        if stray.numel():
            raise ValueError(f"modality id {int(stray[0])} has no experts in this router (it knows {list(self.allowed)})")
        for name in self.allowed:
            rows = (modality_ids == MODALITY_IDS[name]).nonzero().squeeze(1)
            yield name, rows, torch.tensor(self.allowed[name], device=modality_ids.device)

    def router_logits(self, hidden, modality_ids):
        logits = hidden.new_full((hidden.shape[0], self.num_experts), float("-inf"), dtype=torch.float32)
        for name, rows, allowed in self._modality_rows(modality_ids, hidden.shape[0]):
            if rows.numel():
                gate = F.linear(hidden[rows].float(), self.gates[name].weight.float())  # [T_m, R_m]
                logits[rows[:, None], allowed[None, :]] = gate.float()  # autocast makes F.linear bf16 even from fp32 inputs
        return logits

    def select(self, probs, logits):
        return top_k_selection(probs, logits, self.top_k, self.normalize, gumbel_second=False)

    def aux_losses(self, probs, logits, indices, mask, modality_ids, padding_mask):
        losses: dict[str, torch.Tensor] = {}
        for name, rows, allowed in self._modality_rows(modality_ids, probs.shape[0]):
            local = torch.full((self.num_experts,), 0, dtype=torch.long, device=probs.device)
            local[allowed] = torch.arange(len(allowed), device=probs.device)
            pad = None if padding_mask is None else padding_mask[rows]
            losses[f"load_balance/{name}"] = load_balancing_loss(
                probs[rows][:, allowed], local[indices[rows]], mask[rows], pad
            )
        losses["load_balance"] = sum(losses.values(), probs.new_zeros(()))
        losses["z_loss"] = router_z_loss(logits, padding_mask)
        return losses

    def extra_repr(self) -> str:
        return super().extra_repr() + f", top_k={self.top_k}, allowed={self.allowed}"
