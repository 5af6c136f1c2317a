"""Analyses of tickets: ensembles, calibration, OOD accuracy, seed aggregation, and every plot."""
