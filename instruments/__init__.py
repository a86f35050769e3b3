"""instruments package (filled in by later issues)."""
