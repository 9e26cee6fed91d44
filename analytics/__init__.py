"""Exports, reports and plots over the pipeline's streams."""
