"""Lottery Pools: the ticket store, the interpolation search, a pool run over a folder, and its results file."""
