"""linmix physics app."""
