"""The review page: a local web page where the owner teaches imgrank by looking (see server.py)."""
