"""Operations around the pipeline: MLflow tracking and registry, run comparison, data audit, the workspace lock."""
