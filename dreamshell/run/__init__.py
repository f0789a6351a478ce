"""Planning a line once, the model host, the session's image step, the queue, the ! commands and the dry run (no torch)."""
