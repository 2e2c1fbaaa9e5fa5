"""MoVA's shipped trained parts (`zoo train mova --recipe tiny --set ship=true`): easyvqa-tiny.safetensors + easyvqa-tiny.report.json."""
