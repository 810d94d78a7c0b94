"""banger.store."""
