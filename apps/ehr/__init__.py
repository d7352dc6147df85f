"""linmix ehr app."""
