"""imgrank: learns which of your photos you would delete, and shows those first."""

__version__ = "0.1.0"
