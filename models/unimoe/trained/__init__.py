"""Uni-MoE's shipped trained parts (`zoo train unimoe --recipe tiny --set ship=true`): tiny-<stage>.safetensors + tiny-results.json."""
