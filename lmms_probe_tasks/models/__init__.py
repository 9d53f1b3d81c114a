"""lmms-eval model classes of this package."""
