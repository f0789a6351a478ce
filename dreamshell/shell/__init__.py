"""The interactive dream> shell (prompt_toolkit); never imports torch."""
