"""Redis backend for dref."""
