"""Khánh Hòa IOC stream processor: settings, domain models, storage, local stack and CLI."""

__version__ = "0.1.0"
