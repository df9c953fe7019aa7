"""Trigger types: each binds triggers of its kind and reports when they fire."""
