"""The Litestar HTTP adapter."""

from fraudscore_adapters.http.app import Batching, Runtime, RuntimeFactory, create_app

__all__ = ["Batching", "Runtime", "RuntimeFactory", "create_app"]
