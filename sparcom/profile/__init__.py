"""Profiling: count, per category, how often each neuron (and expert) is active on the counted tokens."""
