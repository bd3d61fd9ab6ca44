"""Prefect flows over the DVC pipeline: a full run, scheduled retraining with promotion, Dask detection."""
