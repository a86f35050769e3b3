"""protocols package (filled in by later issues)."""
