"""Shared core of the telemetry pipeline: settings, Redis connection, key names and the reading schema."""

__version__ = "0.5.0"
