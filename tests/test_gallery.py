"""The gallery shell (tab loading, ports, CLI) and the routing trace it draws; fast, no real weights."""
import socket
import sys

import pytest
import torch

from tests.tiny_decoders import tiny_decoder, token_ids
from zoo.apps import cli, gallery
from zoo.apps.routing_heatmap import routing_figure
from zoo.models.upcycled import UpcycledMoeForCausalLM
from zoo.pipelines.routing_trace import trace_routing
from zoo.upcycling.layer import UpcycledFFN
from zoo.upcycling.plan import UpcyclePlan


def tab_labels(demo) -> list[str]:
    return [block.label for block in demo.blocks.values() if type(block).__name__ == "Tab"]


def test_broken_tabs_become_error_tabs(tmp_path, monkeypatch):
    (tmp_path / "good_zoo_tab.py").write_text("import gradio as gr\nTITLE = 'Good'\ndef build():\n    gr.Markdown('fine')\n")
    (tmp_path / "bad_build_zoo_tab.py").write_text(
        "import gradio as gr\nTITLE = 'Bad build'\ndef build():\n    gr.Markdown('half')\n    raise RuntimeError('model file gone')\n")
    (tmp_path / "no_title_zoo_tab.py").write_text("def build():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    demo = gallery.build_gallery(["good_zoo_tab", "bad_build_zoo_tab", "no_title_zoo_tab", "zoo.apps.no_such_tab"])
    assert tab_labels(demo) == ["Good", "Bad build", "no_title_zoo_tab (failed)", "no_such_tab (failed)"]
    texts = " ".join(str(getattr(b, "value", "")) for b in demo.blocks.values())
    assert "RuntimeError: model file gone" in texts
    assert "AttributeError" in texts and "TITLE" in texts
    assert "ModuleNotFoundError" in texts


def test_tab_modules_start_with_chat_and_find_other_tabs():
    modules = gallery.discover_tab_modules()
    assert modules[0] == "zoo.apps.chat_tab"
    assert len(modules) == len(set(modules))
    assert all(m.endswith("_tab") for m in modules)


def test_busy_port_is_a_clear_cli_error(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert cli.main(["demo", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "--port" in err
    assert cli.main(["demo", "--port", "70000"]) == 2
    assert "1..65535" in capsys.readouterr().err


def test_free_port_is_bindable():
    port = gallery.free_port()
    gallery.check_port("127.0.0.1", port)


def naive_threshold_routing(probs: torch.Tensor, threshold: float) -> tuple[list[int], list[int]]:
    """Per token: the most probable expert, and how many experts XMoE takes (mass before < t), by loops."""
    top, used = [], []
    for row in probs.tolist():
        ranked = sorted(range(len(row)), key=lambda e: (-row[e], e))
        mass, count = 0.0, 0
        for e in ranked:
            if count and mass >= threshold:
                break
            mass += row[e]
            count += 1
        top.append(ranked[0])
        used.append(count)
    return top, used


def test_trace_matches_a_naive_threshold_router():
    plan = UpcyclePlan(num_experts=4, router="threshold", threshold=0.6, experts="split", router_init_std=0.5, seed=0)
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder("llama"), plan).eval()
    inputs = {}
    hooks = [ffn.register_forward_pre_hook(lambda m, args, name=name: inputs.__setitem__(name, args[0]))
             for name, ffn in model.moe_layers()]
    ids = token_ids(batch=1, length=11)
    trace = trace_routing(model, None, ids, start=3)
    for h in hooks:
        h.remove()
    assert trace.tokens == [str(i) for i in ids[0, 3:].tolist()]
    assert trace.layers == [name for name, _ in model.moe_layers()] and len(trace.layers) == 4
    for layer, (name, ffn) in enumerate(model.moe_layers()):
        hidden = inputs[name][0, 3:].double()  # [T, H]
        probs = torch.softmax(hidden @ ffn.moe.router.weight.double().T, dim=-1)
        top, used = naive_threshold_routing(probs, 0.6)
        assert trace.top_expert[layer] == top
        assert trace.experts_used[layer] == used
        torch.testing.assert_close(torch.tensor(trace.top_weight[layer]), probs.max(-1).values.float(), atol=1e-5, rtol=0)
    assert 1 < trace.mean_experts_per_token < 4  # a random router at t=0.6: neither all nor one
    fig = routing_figure(trace)
    top_image = fig.axes[0].images[0].get_array()
    assert top_image.tolist() == trace.top_expert


def test_trace_rejects_bad_input():
    model = UpcycledMoeForCausalLM.from_dense(tiny_decoder("llama"), "xmoe").eval()
    with pytest.raises(ValueError, match="one sequence"):
        trace_routing(model, None, token_ids(batch=2), start=0)
    with pytest.raises(ValueError, match="start"):
        trace_routing(model, None, token_ids(batch=1, length=5), start=5)


def test_cli_lists_demo_and_routing_table():
    parser = cli.build_parser()
    names = parser._subparsers._group_actions[0].choices
    assert {"demo", "routing-table"} <= set(names)
    assert parser.parse_args(["demo", "--port", "7861"]).port == 7861
