"""The VM service: create/start/stop/delete microVMs through a staged pipeline."""
