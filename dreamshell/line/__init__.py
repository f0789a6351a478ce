"""The line's own language: request types, the switch table, parser, formatter, prompt syntax, limits, samplers (stdlib only)."""
