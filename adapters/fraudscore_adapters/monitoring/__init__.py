"""Monitoring: Prometheus metrics of the serving path, and score drift.

- :mod:`~fraudscore_adapters.monitoring.drift`: the validation score distribution a model is
  trained with (saved in its manifest) and the population-stability index of recent scores
  against it (pure Python);
- :mod:`~fraudscore_adapters.monitoring.prom`: the metrics (prometheus-client), their
  exposition, multiprocess mode;
- :mod:`~fraudscore_adapters.monitoring.timed`: timing decorators of the ports (store and model
  time per batch), wired by the composition root;
- :mod:`~fraudscore_adapters.monitoring.procdir`: the private directory the server's worker
  processes share their metrics through.

Nothing is imported here: ``procdir`` must be importable before prometheus-client is (it
decides its multiprocess mode once, when it is first imported).
"""
