"""grove: a container orchestrator on its own Raft-replicated, etcd-v2-compatible key-value store."""

__version__ = "0.1.0"
