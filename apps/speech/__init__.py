"""linmix speech app."""
