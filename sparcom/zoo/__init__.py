"""Model building, apart from model access: built-in models converted once from installed GGUF packages, and
models derived from them (the MoE built from SmolLM2), each built into a verified cache."""
