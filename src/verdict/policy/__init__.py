"""Policy stores: loading from disk, immutable snapshots and the holder that swaps them."""
