"""Optuna: the search behind tune.py, its trials, pruning, storage and the workers that share it."""
