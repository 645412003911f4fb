"""Settings of one API server process (the `grove apiserver` flags, named as kube-apiserver's)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .allocators import DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR

KUBERNETES_VERSION = "v1.32.0"
GIT_VERSION = "v1.32.0-grove"


@dataclass
class ServerConfig:
    etcd_servers: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    bind_address: str = "127.0.0.1"
    port: int = 6443
    # The address other components reach this server at (the `kubernetes` service's endpoint).
    advertise_address: str | None = None
    service_cluster_ip_range: str = DEFAULT_SERVICE_CIDR
    service_node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE
    event_ttl: int = 3600  # seconds an Event lives (kube-apiserver --event-ttl=1h)
    # A watch without timeoutSeconds ends after a random time in [min, 2*min), as kube's does.
    min_request_timeout: int = 1800
    bookmark_interval: float = 60.0  # how often a watch that allows bookmarks gets one
    etcd_timeout: float = 5.0
    # TLS to the store's client port (kube-apiserver's --etcd-cafile/--etcd-certfile/--etcd-keyfile)
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_retry_deadline: float = 10.0
    quorum_reads: bool = False
    # Watchers of one resource share one store stream; this many recent events are kept for
    # watches that start a little in the past (kube's watch cache).
    watch_cache_size: int = 10000
    # TLS and authentication (authn.py). HTTPS when the serving pair is given.
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    client_ca_file: str | None = None  # x509 client certificates: user = CN, groups = O
    token_auth_file: str | None = None  # static tokens: token,user,uid,"group1,group2"
    # None: on only when no authenticator is configured (kube-apiserver's --anonymous-auth).
    anonymous_auth: bool | None = None
