"""The Part 2 sharded database: pure routing and payloads, metadata, the cluster, its HTTP layer."""
