"""Test helpers shared by the suites: raw applications and fakes for the ports."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from fraudscore import (
    Application,
    FraudscoreError,
    ModelUnavailable,
    Prediction,
    Reason,
    Reasons,
    Scores,
    StoreUnavailable,
)
from fraudscore.ports import AsyncFeatureRepository, FeatureRepository
from fraudscore_adapters.access import ApiKey, MemoryKeyStore
from fraudscore_adapters.xgb import versions
from fraudscore_adapters.xgb.artifacts import manifest_sha256, read_manifest

RAW_APPLICATION: dict[str, object] = {
    "income": 0.30000000000000004,
    "name_email_similarity": 0.1866,
    "prev_address_months_count": -1,
    "current_address_months_count": 88,
    "customer_age": 50,
    "days_since_request": 0.0206,
    "intended_balcon_amount": -1.03,
    "payment_type": "AB",
    "zip_count_4w": 1059,
    "velocity_6h": 13096.03,
    "velocity_24h": 7850.95,
    "velocity_4w": 6742.08,
    "bank_branch_count_8w": 5,
    "date_of_birth_distinct_emails_4w": 5,
    "employment_status": "CB",
    "credit_risk_score": 163,
    "email_is_free": 1,
    "housing_status": "BC",
    "phone_home_valid": 0,
    "phone_mobile_valid": 1,
    "bank_months_count": 9,
    "has_other_cards": 0,
    "proposed_credit_limit": 1500.0,
    "foreign_request": 0,
    "source": "INTERNET",
    "session_length_in_minutes": 16.22,
    "device_os": "linux",
    "keep_alive_session": 1,
    "device_distinct_emails_8w": 1,
    "device_fraud_count": 0,
}
"""A valid application in BAF's raw form (two sentinels: prev address, balcon amount)."""


def raw(**changes: object) -> dict[str, object]:
    """A copy of RAW_APPLICATION with some fields changed."""
    return {**RAW_APPLICATION, **changes}


def application(**changes: object) -> Application:
    """A validated application built from RAW_APPLICATION with some fields changed."""
    return Application.parse(raw(**changes))


class RuleScorer:
    """A deterministic fake model: housing_status BA scores 0.9, everything else 0.1.

    Like the real scorer, it explains the flagged applications (BA) and those asked for: the
    one reason is housing_status, contributing 2.0 log-odds when BA, else 0.5.
    """

    threshold = 0.5
    model_version = "rule-1"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.explained: list[list[bool] | None] = []

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """0.9 for housing_status BA, else 0.1; reasons for BA and the rows ``explain`` names."""
        self.batches.append(len(applications))
        self.explained.append(None if explain is None else list(explain))
        probabilities = [0.9 if a["housing_status"] == "BA" else 0.1 for a in applications]
        asked = explain or [False] * len(applications)
        reasons = [
            rule_reasons(a) if p >= self.threshold or ask else None
            for a, p, ask in zip(applications, probabilities, asked, strict=True)
        ]
        return Scores(
            probabilities,
            self.threshold,
            self.model_version,
            reasons if any(r is not None for r in reasons) else None,
        )


def rule_reasons(application: Application) -> Reasons:
    """What :class:`RuleScorer` gives as the reasons of ``application``."""
    status = application["housing_status"]
    return (Reason("housing_status", status, 2.0 if status == "BA" else 0.5),)


class AsyncRuleScorer:
    """The async face of :class:`RuleScorer`."""

    def __init__(self, scorer: RuleScorer) -> None:
        self.scorer = scorer

    async def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """Delegate to the sync rule."""
        return self.scorer.score(applications, explain=explain)


class BrokenScorer:
    """A model that fails: raises ModelUnavailable, or returns whatever it is told to."""

    def __init__(self, result: Scores | None = None) -> None:
        self.result = result

    def score(
        self, applications: Sequence[Application], *, explain: Sequence[bool] | None = None
    ) -> Scores:
        """Return the canned result, or fail."""
        if self.result is None:
            raise ModelUnavailable("model file is gone")
        return self.result


class DownSink:
    """A prediction sink whose database is down."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def record_many(self, predictions: Sequence[Prediction]) -> None:
        """Fail like a store that cannot be reached."""
        with self.lock:
            self.calls += 1
        raise StoreUnavailable("connection refused")


class FlakyKeyStore:
    """A key store in front of a :class:`MemoryKeyStore` whose database can go down.

    While ``down`` is set every read and write fails like an unreachable database;
    ``failures`` counts the calls that failed.
    """

    def __init__(self, inner: MemoryKeyStore) -> None:
        self.inner = inner
        self.down = threading.Event()
        self.failures = 0
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down.is_set():
            with self._lock:
                self.failures += 1
            raise StoreUnavailable("connection refused")

    def add(self, key: ApiKey) -> None:
        """Store a new key (fails while down)."""
        self._check()
        self.inner.add(key)

    def all(self) -> list[ApiKey]:
        """Every key (fails while down)."""
        self._check()
        return self.inner.all()

    def revoke(self, key_id: str, at: datetime) -> ApiKey | None:
        """Revoke a key (fails while down)."""
        self._check()
        return self.inner.revoke(key_id, at)

    def touch(self, used: Mapping[str, datetime]) -> None:
        """Record last-use times (fails while down)."""
        self._check()
        self.inner.touch(used)


def latest(store: FeatureRepository, user_id: int) -> Application:
    """One user's application through the batch port; raise its error."""
    (found,) = store.latest_many([user_id])
    if isinstance(found, FraudscoreError):
        raise found
    return found


async def alatest(store: AsyncFeatureRepository, user_id: int) -> Application:
    """:func:`latest` through the async port."""
    (found,) = await store.latest_many([user_id])
    if isinstance(found, FraudscoreError):
        raise found
    return found


def versioned(root: Path, *models: Path) -> list[str]:
    """An artifact root holding copies of the flat artifact folders ``models`` as versions,
    published in order a day apart (so ``current`` names the last, ``previous`` the one
    before); their version names, in order."""
    names = []
    for day, model in enumerate(models, start=1):
        staged = versions.stage(root)
        for item in model.iterdir():
            shutil.copy2(item, staged / item.name)
        model_version = read_manifest(staged).model_version
        names.append(
            versions.publish(root, staged, model_version, at=datetime(2025, 1, day, tzinfo=UTC))
        )
    return names


def version_names(root: Path) -> tuple[str, str]:
    """The names of a two-version root's versions, oldest first."""
    a, b = versions.versions(root)
    return a, b


def pin_of(root: Path, version: str) -> str:
    """The pin (manifest SHA-256) of a version."""
    return manifest_sha256(root / "versions" / version)


def model_version_of(root: Path, version: str) -> str:
    """The model version a version's manifest names."""
    return read_manifest(root / "versions" / version).model_version


def tamper(root: Path, version: str) -> str:
    """A copy of ``version`` whose model.pkl is one byte longer than its manifest says; its
    name."""
    copy = f"{version}-tampered"
    shutil.copytree(root / "versions" / version, root / "versions" / copy)
    with (root / "versions" / copy / "model.pkl").open("ab") as pickled:
        pickled.write(b"\0")
    return copy
