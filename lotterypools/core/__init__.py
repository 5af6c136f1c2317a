"""Foundations every layer uses: one-line errors, console output, atomic files, result records, device and seeds."""
