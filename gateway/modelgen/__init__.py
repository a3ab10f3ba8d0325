"""Generated local models: Llama-style models with random weights in the exact shapes of a size tier
and a locally trained BPE tokenizer (`presets`, `create`), so tests and the default config run offline."""
