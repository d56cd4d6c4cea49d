"""fraudscore: fraud scoring for bank-account-opening applications (the BAF schema).

The core library: the feature schema, domain values and errors, the ports, and the scoring use
case. It imports nothing beyond the standard library; adapters live in ``fraudscore_adapters``.
"""

from fraudscore.domain import (
    MAX_USER_ID,
    Application,
    Prediction,
    Reason,
    Reasons,
    Scores,
    is_fraud,
    parse_user_id,
)
from fraudscore.errors import (
    FraudscoreError,
    InvalidFeatures,
    InvalidUserId,
    ModelUnavailable,
    StoreError,
    StoreUnavailable,
    UnknownUser,
)
from fraudscore.ports import (
    AsyncFeatureRepository,
    AsyncPredictionSink,
    AsyncScorer,
    FeatureRepository,
    PredictionSink,
    Scorer,
)
from fraudscore.schema import (
    FEATURE_NAMES,
    FEATURES,
    Feature,
    FieldProblem,
    Kind,
    Missing,
    Value,
)
from fraudscore.service import AsyncScoringService, Outcome, ScoringService, utc_now

__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "MAX_USER_ID",
    "Application",
    "AsyncFeatureRepository",
    "AsyncPredictionSink",
    "AsyncScorer",
    "AsyncScoringService",
    "Feature",
    "FeatureRepository",
    "FieldProblem",
    "FraudscoreError",
    "InvalidFeatures",
    "InvalidUserId",
    "Kind",
    "Missing",
    "ModelUnavailable",
    "Outcome",
    "Prediction",
    "PredictionSink",
    "Reason",
    "Reasons",
    "Scorer",
    "Scores",
    "ScoringService",
    "StoreError",
    "StoreUnavailable",
    "UnknownUser",
    "Value",
    "is_fraud",
    "parse_user_id",
    "utc_now",
]
