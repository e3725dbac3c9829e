"""In-memory backend for dref."""
