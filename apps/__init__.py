"""linmix applications: one package per domain app, each standing on `shared`."""
