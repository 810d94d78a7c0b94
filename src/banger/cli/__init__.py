"""banger.cli."""
