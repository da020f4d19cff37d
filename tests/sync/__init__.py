"""Tests of the sans-IO sync engine over a deterministic simulated network."""
