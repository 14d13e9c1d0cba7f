"""The team stack on one machine: PostgreSQL, S3 (moto) and an MLflow server on 127.0.0.1."""
