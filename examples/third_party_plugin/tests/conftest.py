# the fixtures of compression-orchestrator's testing package: orchestrator_registry, tiny_task, tiny models
pytest_plugins = ["orchestrator.testing.fixtures"]
