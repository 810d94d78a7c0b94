"""banger.kernels."""
