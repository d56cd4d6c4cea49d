"""Who may call: API keys (minted, hashed, stored, revoked), the gate every protected route
goes through (authentication, scopes, rate limits), and where keys are kept.

- :mod:`~fraudscore_adapters.access.keys`: the key record, minting and hashing, the store port;
- :mod:`~fraudscore_adapters.access.keyfile`: keys in a local JSON file (the embedded default);
- :mod:`~fraudscore_adapters.access.gate`: the gate: one check for every serving path.

The PostgreSQL key store lives with the other PostgreSQL adapters
(:mod:`fraudscore_adapters.postgres.keys`).
"""

from fraudscore_adapters.access.gate import (
    AccessDenied,
    Forbidden,
    Gate,
    KeysUnavailable,
    RateLimited,
    TokenBuckets,
    Unauthenticated,
    keep_fresh,
    refresh,
)
from fraudscore_adapters.access.keyfile import FileKeyStore
from fraudscore_adapters.access.keys import (
    SCOPES,
    ApiKey,
    KeyStore,
    MemoryKeyStore,
    key_sha256,
    mint,
)

__all__ = [
    "SCOPES",
    "AccessDenied",
    "ApiKey",
    "FileKeyStore",
    "Forbidden",
    "Gate",
    "KeyStore",
    "KeysUnavailable",
    "MemoryKeyStore",
    "RateLimited",
    "TokenBuckets",
    "Unauthenticated",
    "keep_fresh",
    "key_sha256",
    "mint",
    "refresh",
]
