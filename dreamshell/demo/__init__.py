"""The demo model's world (procedural shapes, the adapters' concepts) and its measures."""
