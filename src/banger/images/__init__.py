"""banger.images."""
