"""dslab: a consistent-hashing load balancer and a sharded database built on it."""

__version__ = "0.1.0"
