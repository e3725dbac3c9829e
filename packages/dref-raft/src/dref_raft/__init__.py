"""Raft consensus backend for dref."""
