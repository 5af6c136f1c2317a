"""Data sets with fixed splits, batches on the device, DataLoader and ImageFolder paths, corrupted test sets."""
