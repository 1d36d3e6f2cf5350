"""Policy regression suites: ``verdict test`` runs YAML/JSON cases through the engine."""
