"""XMoE routers trained for SmolLM2-135M-Instruct (`python -m benchmarks.xmoe --save`; zoo.pipelines.xmoe_smollm2)."""
