"""The command line: torch-free flags, the glue from flags to objects, and one module per command in commands/."""
