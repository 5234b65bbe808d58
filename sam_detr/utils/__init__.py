"""Helpers of the user tools under tools/ (model analysis)."""
