"""Is the colour of an easy-VQA shape in MoVA's frozen vision features? A linear probe per tower.

    OMP_NUM_THREADS=1 python -m benchmarks.mova_colour_probe      # ~1 min after the bases are cached

The colour questions among the first 3000 training questions (a fixed subset, seed 0); per tower of the shipped
MoVA (base encoder + each expert): its tokens on the base grid, mean- and max-pooled over positions, standardised;
a softmax regression (Adam, 300 steps, weight decay 1e-3) trained on 70% of them and scored on the other 30%.
Raw pixels pooled to 1x1 and 4x4 are the floor. The shipped model answers colour questions at chance (README):
a high probe accuracy says the colour is lost after the encoders, not in them.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, classes: int, train: torch.Tensor, steps: int = 300) -> float:
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-5)
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(x[train] @ weight + bias, y[train]) + 1e-3 * (weight ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return ((x[~train] @ weight + bias).argmax(-1) == y[~train]).float().mean().item()


def main() -> None:
    from zoo.models.mova.vision_experts import expert_tokens
    from zoo.pipelines import vl_easyvqa as vqa
    from zoo.pipelines.train_mova import load_shipped

    torch.manual_seed(0)
    model, processor, _ = load_shipped()
    data = vqa.EasyVqa("train", processor, limit=3000)
    rows = [i for i, a in enumerate(data.answers) if vqa.answer_type(a) == "colour"]
    colours = sorted({data.answers[i] for i in rows})
    y = torch.tensor([colours.index(data.answers[i]) for i in rows])
    pixels = data.pixels[data.image_rows[rows]].float()
    train = torch.arange(len(rows)) < int(0.7 * len(rows))
    features = {"raw pixels 1x1": pixels.mean((2, 3)), "raw pixels 4x4": F.adaptive_avg_pool2d(pixels, 4).flatten(1)}
    with torch.no_grad():
        for name, tower in [("base", model.vision_tower), *zip(model.config.expert_names, model.vision_experts)]:
            tokens = torch.cat([expert_tokens(tower(pixels[i:i + 50]), model.grid_side).float()
                                for i in range(0, len(pixels), 50)])  # [n, G*G, C]
            features[f"{name} mean"], features[f"{name} max"] = tokens.mean(1), tokens.amax(1)
    print(f"{len(rows)} colour questions, {len(colours)} colours (chance {1 / len(colours):.3f}); held-out accuracy:")
    for name, x in features.items():
        print(f"  {name:20s} dim {x.shape[1]:5d}  {probe_accuracy(x, y, len(colours), train):.3f}", flush=True)


if __name__ == "__main__":
    main()
