"""The Part 2 shard server: one engine, one collection per shard it holds."""
