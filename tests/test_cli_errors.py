"""The `zoo` command's promise: a bad input ends in one line naming the file or field and exit code 2, never
a traceback, and `zoo upcycle` never writes experts copied from weights the dense checkpoint did not hold.

Every case runs the real CLI (`zoo.apps.cli.main(argv)`) on a tiny Llama saved in tmp_path and damaged one
way: safetensors offsets or dtype, config.json (not JSON, relabelled model_type, more or fewer layers, an
unknown or learnable activation), a renamed FFN tensor, --out = --base; plus `zoo eval` on truncated weights
and `zoo train` with bad numbers."""
from __future__ import annotations

import json
import shutil
import struct

import pytest
from safetensors.torch import load_file, save_file

from tests.tiny_decoders import tiny_decoder
from zoo.apps.cli import main

pytestmark = pytest.mark.usefixtures("single_thread")
PLAN = "top2-of-4"


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense") / "llama"
    tiny_decoder("llama").save_pretrained(folder)
    return folder


def damaged(dense, tmp_path, damage) -> object:
    folder = tmp_path / "base"
    shutil.copytree(dense, folder)
    damage(folder)
    return folder


def run(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


def upcycle(base, out, capsys) -> tuple[int, str]:
    return run(["upcycle", "--base", base, "--plan", PLAN, "--out", out], capsys)


# -- damage -----------------------------------------------------------------------------------------
def edit_header(folder, edit) -> None:
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    edit(header["lm_head.weight"])
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size:])


def edit_config(folder, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def rename_tensor(folder, old: str, new: str) -> None:
    state = load_file(folder / "model.safetensors")
    state[new] = state.pop(old)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def short_offsets(entry):
    entry["data_offsets"][1] -= 4


def unknown_dtype(entry):
    entry["dtype"] = "F99"


CASES = {
    "bad offsets": (lambda f: edit_header(f, short_offsets), ["model.safetensors", "lm_head.weight", "data_offsets"]),
    "bad dtype": (lambda f: edit_header(f, unknown_dtype), ["model.safetensors", "lm_head.weight", "'F99'"]),
    "config not json": (lambda f: (f / "config.json").write_text("{not json"), ["config.json", "not valid JSON"]),
    "relabelled model_type": (lambda f: edit_config(f, model_type="mistral"),
                              ["config.json", "model_type 'mistral'", "LlamaForCausalLM"]),
    "unknown model_type": (lambda f: edit_config(f, model_type="zzz"), ["config.json", "unknown model_type 'zzz'"]),
    "renamed ffn tensor": (lambda f: rename_tensor(f, "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.up.weight"),
                           ["no tensor 'model.layers.1.mlp.up_proj.weight'", "layer 1"]),
    "renamed attention tensor": (lambda f: rename_tensor(f, "model.layers.0.self_attn.q_proj.weight", "q.weight"),
                                 ["model.layers.0.self_attn.q_proj.weight"]),
    "more layers in config": (lambda f: edit_config(f, num_hidden_layers=6), ["no tensor 'model.layers.4.mlp"]),
    "fewer layers in config": (lambda f: edit_config(f, num_hidden_layers=2),
                               ["tensors the config does not use", "model.layers.2."]),
    "unknown hidden_act": (lambda f: edit_config(f, hidden_act="foo"), ["config.json", "hidden_act='foo'"]),
    "learnable hidden_act": (lambda f: tiny_decoder("llama", hidden_act="prelu").save_pretrained(f),
                             ["layer 0", "act_fn.weight", "prelu"]),  # its slope would be left out of every expert
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_dense_checkpoint_is_named_and_nothing_is_written(dense, tmp_path, capsys, case):
    damage, expected = CASES[case]
    base = damaged(dense, tmp_path, damage)
    code, message = upcycle(base, tmp_path / "moe", capsys)
    assert code == 2, message
    assert message.startswith("zoo upcycle: ") and "Traceback" not in message
    for part in expected:
        assert part in message, (part, message)
    assert not (tmp_path / "moe").exists()


def test_an_intact_checkpoint_upcycles_with_exit_0(dense, tmp_path, capsys):
    code = main(["upcycle", "--base", str(dense), "--plan", PLAN, "--out", str(tmp_path / "moe")])
    assert code == 0 and (tmp_path / "moe" / "config.json").is_file()


def test_upcycle_refuses_to_overwrite_its_dense_checkpoint(dense, tmp_path, capsys):
    base = damaged(dense, tmp_path, lambda f: None)
    before = {p.name: p.read_bytes() for p in base.iterdir()}
    code, message = upcycle(base, tmp_path / "." / "base", capsys)
    assert code == 2 and "--out" in message and "overwrite" in message
    assert {p.name: p.read_bytes() for p in base.iterdir()} == before


def test_export_names_a_relabelled_upcycled_checkpoint(dense, tmp_path, capsys):
    assert main(["upcycle", "--base", str(dense), "--plan", PLAN, "--out", str(tmp_path / "moe")]) == 0
    edit_config(tmp_path / "moe", model_type="llama")
    code, message = run(["export", tmp_path / "moe", "--out", tmp_path / "hub"], capsys)
    assert code == 2 and "config.json" in message and "UpcycledMoeForCausalLM" in message
    assert not (tmp_path / "hub").exists()


def test_eval_on_truncated_weights_names_the_file(tmp_path, capsys):
    from zoo.pipelines.evaluate_mofme import shipped_weights_dir

    weights = tmp_path / "weights"
    shutil.copytree(shipped_weights_dir(), weights)
    file = weights / "tiny-fme" / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    code, message = run(["eval", "mofme", "--weights", weights], capsys)
    assert code == 2 and str(file) in message and "truncated" in message


@pytest.mark.parametrize("argv, expected", [
    (["--set", "checkpoint_every=0"], "checkpoint_every must be a positive integer, got 0"),
    (["--set", "lr=-1"], "lr must be a finite number > 0"),
    (["--max-steps", "-5"], "--max-steps must be a positive integer"),
    (["--max-steps", "0"], "--max-steps must be a positive integer"),
])
def test_train_refuses_bad_numbers_before_training(tmp_path, capsys, argv, expected):
    code, message = run(["train", "mofme", "--output-dir", tmp_path / "run", *argv], capsys)
    assert code == 2 and expected in message, message
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("checkpoint-*.pt"))


def test_train_resume_on_an_empty_directory_is_refused(tmp_path, capsys):
    code, message = run(["train", "mofme", "--output-dir", tmp_path, "--resume", "--max-steps", "2"], capsys)
    assert code == 2 and "--resume: no checkpoint in" in message and str(tmp_path) in message
