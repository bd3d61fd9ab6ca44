"""Where each stage reads and writes, relative to the project root (as in dvc.yaml)."""

from pathlib import Path

RAW_DIR = Path("data/raw")
FACES_DIR = Path("data/faces")
TRAIN_DIR = Path("data/train")
REPORTS_DIR = Path("reports")
VALIDATION_REPORT = REPORTS_DIR / "validation.json"
DATA_DOCS_DIR = REPORTS_DIR / "data_docs"

MANIFEST = "manifest.csv"
REJECTED = "rejected.csv"
FACES_CSV = "faces.csv"
DUPLICATES_CSV = "duplicates.csv"
TRAIN_INDEX = "index.json"

GENERATOR = Path("models/generator.pt")
CHECKPOINT = Path("models/checkpoints/last.pt")
RUN_FILE = Path("models/run.json")
EVAL_METRICS = Path("metrics/eval.json")
