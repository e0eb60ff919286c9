"""Learning on arrays: numpy, scikit-learn and torch; no SQL, no paths, no click (docs/ARCHITECTURE.md)."""
