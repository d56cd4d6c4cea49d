"""XGBoost adapter: training (``python -m fraudscore_adapters.xgb``) and the Scorer."""

from fraudscore_adapters.xgb.artifacts import (
    MANIFEST,
    Manifest,
    library_versions,
    manifest_sha256,
    read_manifest,
    read_verified,
    required_pin,
    sha256_file,
)
from fraudscore_adapters.xgb.metrics import (
    Confusion,
    Evaluation,
    Fairness,
    confusion,
    evaluate,
    fairness,
    threshold_at_fpr,
    tpr_at_fpr,
)
from fraudscore_adapters.xgb.pipeline import (
    CompiledTransform,
    build_preprocessor,
    compile_transform,
    features_frame,
)
from fraudscore_adapters.xgb.scorer import XGBScorer, probe_applications
from fraudscore_adapters.xgb.training import (
    Splits,
    TrainConfig,
    TrainingResult,
    make_splits,
    split_random,
    split_temporal,
    summary,
    train_file,
    train_frame,
)

__all__ = [
    "MANIFEST",
    "CompiledTransform",
    "Confusion",
    "Evaluation",
    "Fairness",
    "Manifest",
    "Splits",
    "TrainConfig",
    "TrainingResult",
    "XGBScorer",
    "build_preprocessor",
    "compile_transform",
    "confusion",
    "evaluate",
    "fairness",
    "features_frame",
    "library_versions",
    "make_splits",
    "manifest_sha256",
    "probe_applications",
    "read_manifest",
    "read_verified",
    "required_pin",
    "sha256_file",
    "split_random",
    "split_temporal",
    "summary",
    "threshold_at_fpr",
    "tpr_at_fpr",
    "train_file",
    "train_frame",
]
