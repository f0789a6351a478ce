"""The driver of a command file on a Ray cluster: plans and saves through run/ and store/ (no torch)."""
