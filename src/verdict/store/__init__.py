"""Entity stores: where principals, resources and their relations live (in memory or Redis)."""
