"""Helpers of the user tools under tools/ (model analysis, command-line errors) and of training (random states)."""
