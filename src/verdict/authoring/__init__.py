"""Authoring tools for security engineers: fmt, version, diff and validate's warnings."""
