"""banger: disposable Linux microVMs on a developer's workstation."""

__version__ = "0.1.0"
