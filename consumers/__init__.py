"""Aggregator workers in a consumer group: windows, rolling stats and alerts, applied exactly once."""
