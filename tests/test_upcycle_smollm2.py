"""Function preservation on the real SmolLM2-135M-Instruct (fp32 cache from zoo.integrations.assets; slow).

Each MoE layer computes its dense FFN on the real hidden states of a prompt to within 1e-5 + 1e-6 x the
layer's largest output: SmolLM2's FFN outputs reach ~1.4e4 in some layers (massive activations), where
one fp32 ulp is already 1e-3, and the experts' GEMMs (other row blocks, K = 1536 terms accumulated in
another order) round differently from the dense GEMM at the scale of those terms, so a pure atol of
1e-5 cannot hold (measured worst: 9.8e-4 at a layer whose outputs reach 1.4e4, 7e-8 of the scale). Over the whole
30-layer model the fp32 rounding of the expert combine (w1*y + w2*y for w1 + w2 = 1, a different
matmul blocking per expert slice) compounds: the logits (magnitude ~30) then agree to 1e-4, not 1e-5
(measured 3e-5 .. 4e-5 by `python -m benchmarks.upcycle`, 6e-5 on a longer prompt); the tiny-model tests hold 1e-5 end to end.
"""
import copy

import pytest
import torch

import zoo
from zoo.upcycling.layer import upcycled_layers

pytestmark = pytest.mark.slow

PLANS = {"copy top-2 of 4": zoo.PLANS["top2-of-4"], "split, threshold 1.0": zoo.PLANS["xmoe"].replace(threshold=1.0)}


@pytest.fixture(scope="module")
def smollm2():
    from zoo.integrations.assets import load_smollm2

    model, tokenizer = load_smollm2(torch.float32, progress=False)
    ids = tokenizer("The three primary colors are red, yellow and", return_tensors="pt").input_ids
    ffn_inputs, ffn_outputs = {}, {}

    def record(index):
        def hook(module, args, out):
            ffn_inputs[index], ffn_outputs[index] = args[0], out
        return hook

    hooks = [layer.mlp.register_forward_hook(record(i)) for i, layer in enumerate(model.model.layers)]
    with torch.no_grad():
        logits = model(ids).logits
    for hook in hooks:
        hook.remove()
    return model, ids, logits, ffn_inputs, ffn_outputs


@pytest.mark.parametrize("name", PLANS)
def test_real_smollm2_upcycled_layers_compute_the_dense_ffn(smollm2, name):
    dense, ids, logits, ffn_inputs, ffn_outputs = smollm2
    model = zoo.upcycle(copy.deepcopy(dense), PLANS[name])
    assert len(upcycled_layers(model)) == 30
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            error = (layer.mlp(ffn_inputs[i]) - ffn_outputs[i]).abs().max().item()
            scale = ffn_outputs[i].abs().max().item()
            assert error <= 1e-5 + 1e-6 * scale, f"layer {i}: max error {error:.3g} at output scale {scale:.3g}"
        torch.testing.assert_close(model(ids).logits, logits, atol=1e-4, rtol=0)
