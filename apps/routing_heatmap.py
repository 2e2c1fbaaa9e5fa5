"""Draw a RoutingTrace: per layer (rows) and token (columns), the expert the token went to first,
and next to it how many experts it used (XMoE's threshold routing varies this per token)."""
from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure  # not pyplot: figures drawn in server threads stay out of its global registry

from zoo.pipelines.routing_trace import RoutingTrace


def _token_labels(tokens: list[str]) -> list[str]:
    return [repr(t)[1:-1] if t.strip() else repr(t) for t in tokens]


def routing_figure(trace: RoutingTrace) -> Figure:
    top = np.array(trace.top_expert)  # [L, T]
    used = np.array(trace.experts_used)  # [L, T]
    num_layers, num_tokens = top.shape
    width = min(4 + 0.28 * num_tokens, 30)
    fig = Figure(figsize=(2 * width, 1.2 + 0.22 * num_layers))
    ax_top, ax_used = fig.subplots(1, 2)
    colours = matplotlib.colormaps["tab20" if trace.num_experts > 10 else "tab10"].colors[: trace.num_experts]
    expert_cmap = ListedColormap(colours)
    expert_norm = BoundaryNorm(np.arange(trace.num_experts + 1) - 0.5, trace.num_experts)
    image = ax_top.imshow(top, aspect="auto", cmap=expert_cmap, norm=expert_norm, interpolation="nearest")
    fig.colorbar(image, ax=ax_top, ticks=range(trace.num_experts), label="top expert", fraction=0.03)
    ax_top.set_title("first-choice expert per token and layer")
    counts = ax_used.imshow(used, aspect="auto", cmap="viridis", vmin=1, vmax=trace.num_experts, interpolation="nearest")
    fig.colorbar(counts, ax=ax_used, label="experts used", fraction=0.03)
    ax_used.set_title(f"experts used (mean {trace.mean_experts_per_token:.2f} of {trace.num_experts})")
    labels = _token_labels(trace.tokens)
    for ax in (ax_top, ax_used):
        ax.set_xticks(range(num_tokens), labels, rotation=90, fontsize=9)
        ax.set_yticks(range(0, num_layers, max(1, num_layers // 15)))
        ax.set_ylabel("MoE layer")
    fig.tight_layout()
    return fig
