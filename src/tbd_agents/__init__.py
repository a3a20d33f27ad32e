"""TBD Agents: a self-hosted AI agent hub."""

__version__ = "0.1.0"
