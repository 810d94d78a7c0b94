"""banger.helper."""
