"""Simulated temperature/humidity sensors, launched by name, writing readings into a Redis stream."""
