"""Format exporters: one module per artifact kind."""
