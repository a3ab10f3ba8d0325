"""Generated local models: Llama-style models with random weights in the exact shapes of a size tier
and a locally trained BPE tokenizer, so tests and the default config run offline.

`presets` (the size tiers' shapes), `tokenizer` (training it, its files), `plan` (tensors, shards,
config.json), `resources` (does it fit on disk and in memory), `weights` (writing the shards),
`create` (`create_model`, `ensure_model`), `cli` (`gateway model create`). Below the backends: it
imports nothing of the gateway but `gateway.blas`.
"""
