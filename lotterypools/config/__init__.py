"""Settings declared once: dataclasses whose fields carry their flags, and the names the flags offer."""
