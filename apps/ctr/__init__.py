"""linmix ctr app."""
