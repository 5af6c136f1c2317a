"""The one epoch loop and its hooks, the round engine, masks, dynamic sparse updates, sources, processes."""
