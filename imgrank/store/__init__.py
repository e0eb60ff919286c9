"""The store: one module per table group, SQL only, typed rows in and out (docs/ARCHITECTURE.md)."""
