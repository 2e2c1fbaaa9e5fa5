"""The zoo's edges to other tools: PEFT presets, Hub export and upload, native Mixtral/Qwen3-MoE
export, checkpoint files and key conversion, and the real weights that ship in registry packages."""
