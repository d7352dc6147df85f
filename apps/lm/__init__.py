"""linmix lm app."""
