"""Shared core of the telemetry pipeline: settings, Redis connection, key names and the reading schema."""
