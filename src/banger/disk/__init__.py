"""banger.disk."""
