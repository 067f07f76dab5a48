"""The Part 2 contract's request bodies and rows, shared by the shard server (``shard/``) and the
database balancer (``db/``), which both validate them: a module that belongs to neither."""
