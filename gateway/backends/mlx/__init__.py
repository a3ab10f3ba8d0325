"""Local inference with mlx-lm: the engine thread, the model store, OpenBLAS setup (`blas`), and
generated random-weight models of real sizes (`presets`, `create`)."""
