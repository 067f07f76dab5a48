"""The Part 2 sharded database balancer: pure routing and placement, metadata, the cluster, its HTTP
layer. It stands on ``keeper/`` (as Part 1 does) and ``contract/`` (as the shard server does)."""
