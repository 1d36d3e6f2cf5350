"""The hot-path benchmark (issue 9): floor, lending, policy count, batch and Cerbos side by side."""
