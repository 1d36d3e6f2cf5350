"""The decision engine: entity slicing and Cedar evaluation, independent of gRPC and storage."""
