"""The decision audit log: one hash-chained record per decision, written off the hot path."""
