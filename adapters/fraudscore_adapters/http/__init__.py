"""The Litestar HTTP adapter."""

from fraudscore_adapters.batching import Batching
from fraudscore_adapters.http.app import Runtime, RuntimeFactory, create_app
from fraudscore_adapters.http.fastpath import FastPredictRoutes

__all__ = ["Batching", "FastPredictRoutes", "Runtime", "RuntimeFactory", "create_app"]
