"""Errors the library raises for bad input, before any training starts."""


class ConfigurationError(ValueError):
    """A setting is invalid; the message names the setting and how to fix it."""
