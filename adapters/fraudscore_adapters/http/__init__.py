"""The Litestar HTTP adapter."""

from fraudscore_adapters.http.app import Runtime, RuntimeFactory, create_app

__all__ = ["Runtime", "RuntimeFactory", "create_app"]
