"""grove's Kubernetes-compatible API server: the cluster's objects, kept in grove's store.

`ApiServer(config).build_app()` is the aiohttp application; `serve(config)` runs it (the
`grove apiserver` command). See app.py for the request flow, storage.py for how objects map
onto store keys, and watch.py / watchcache.py for watches.
"""

from .app import ApiServer, run, serve, version_info
from .config import ServerConfig

__all__ = ["ApiServer", "ServerConfig", "run", "serve", "version_info"]
