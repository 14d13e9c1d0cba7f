"""MLflow: where runs go, lineage, the pipeline's run, what it logs, and the model registry. With
tuning's runs (tuning.runs), the only code that imports mlflow."""
