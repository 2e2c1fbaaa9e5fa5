"""One dense FFN's weights in a common form: what every expert builder starts from."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.expert_banks import activation
from ..core.validation import check_number, check_weight


@dataclass
class FFNWeights:
    """One dense FFN in nn.Linear layout. `gate` is None for a plain MLP.

        glu: y = down( act(gate x) * (up x) )
        mlp: y = down( act(up x + up_bias) ) + down_bias
    """

    up: torch.Tensor  # [I, H]
    down: torch.Tensor  # [H, I]
    act: str
    gate: torch.Tensor | None = None  # [I, H]
    up_bias: torch.Tensor | None = None  # [I]
    down_bias: torch.Tensor | None = None  # [H]
    dropout: float = 0.0  # applied to the FFN output in training (GPT-2's resid_pdrop)

    def __post_init__(self):
        # every expert builder copies these tensors: a wrong shape or a NaN would end up in E experts
        check_weight(self, "up", self.up, dims=2)
        check_weight(self, "down", self.down, dims=2)
        intermediate, hidden = self.up.shape
        if tuple(self.down.shape) != (hidden, intermediate):
            raise ValueError(f"FFNWeights.up {tuple(self.up.shape)} [I, H] and FFNWeights.down {tuple(self.down.shape)} "
                             "[H, I] are not one FFN's weights")
        check_weight(self, "gate", self.gate, shape=(intermediate, hidden), allow_none=True)
        check_weight(self, "up_bias", self.up_bias, shape=(intermediate,), allow_none=True)
        check_weight(self, "down_bias", self.down_bias, shape=(hidden,), allow_none=True)
        activation(self.act, self)
        check_number(self, "dropout", self.dropout, low=0, high=1, high_open=True)

    @property
    def kind(self) -> str:
        return "mlp" if self.gate is None else "glu"

    @property
    def hidden_size(self) -> int:
        return self.up.shape[1]

    @property
    def intermediate_size(self) -> int:
        return self.up.shape[0]

    def part(self, index: int, parts: int) -> "FFNWeights":
        """The `index`-th of `parts` equal slices of the hidden units (fine-grained experts).

        The slices sum to the dense FFN: sum_p down_p(act(...)_p) + down_bias. The bias is added
        once in the dense FFN, so each part carries down_bias / parts."""
        size = self.intermediate_size // parts
        rows = slice(index * size, (index + 1) * size)
        return FFNWeights(
            up=self.up[rows], down=self.down[:, rows], act=self.act,
            gate=None if self.gate is None else self.gate[rows],
            up_bias=None if self.up_bias is None else self.up_bias[rows],
            down_bias=None if self.down_bias is None else self.down_bias / parts,
            dropout=self.dropout,
        )
