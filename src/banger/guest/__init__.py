"""banger.guest."""
