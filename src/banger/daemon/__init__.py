"""banger.daemon."""
