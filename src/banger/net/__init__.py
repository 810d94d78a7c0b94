"""banger.net."""
