"""attrkit."""
