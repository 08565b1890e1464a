"""asymtp executor: load a rank's slice of an mlx-lm model and run it in an mx.distributed group."""
