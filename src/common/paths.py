"""Where the project's files are: the repo root, the pipeline's data, models and reports.

Every file a stage hands to another is defined once here; dvc.yaml names the same files.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = ROOT / "params.yaml"
RAW_DIR = ROOT / "data" / "raw"
PROCESSED_DIR = ROOT / "data" / "processed"
# Corrections collected by `serve.py --collect` (a DVC-tracked dataset: data/feedback/README.md)
FEEDBACK_DIR = ROOT / "data" / "feedback" / "corrections"
TEST_SPLIT = PROCESSED_DIR / "test.npz"
FEEDBACK_SPLIT = PROCESSED_DIR / "feedback.npz"  # the collected slice, as preprocess packed it
MODELS_DIR = ROOT / "models"
REPORTS_DIR = ROOT / "reports"
MODEL_FILE = MODELS_DIR / "model.keras"
# Which model evaluate scored and offered to the registry: DVC-cached, so a fresh clone lacks it
# and its first `dvc repro` evaluates (and registers) the model it trains, in its own store.
EVALUATION_FILE = MODELS_DIR / "evaluation.json"
PREPROCESS_REPORTS = REPORTS_DIR / "preprocess"
TRAIN_REPORTS = REPORTS_DIR / "train"
EVAL_REPORTS = REPORTS_DIR / "eval"
TUNE_REPORTS = REPORTS_DIR / "tune"
BEST_PARAMS_FILE = TUNE_REPORTS / "best_params.yaml"  # tune.py's winner, for --apply
EXPLAIN_DIR = REPORTS_DIR / "explain"  # predict.py --explain's figures
