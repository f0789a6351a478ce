"""What lands on disk: the output folder (name + chunks + log line, crash-consistent), the log, durable writes, recipe formats."""
