"""grove's service proxy (kube-proxy's job): ClusterIP, NodePort and LoadBalancer services over TCP
and UDP, round robin over ready endpoints, ClientIP session affinity.

The mechanism is iptables DNAT in grove's own chains (see `rules`), programmed by `Proxier` from
Services and Endpoints seen through `orchestrator.watchers`: the kernel forwards every packet, so
a cluster IP costs about what a pod IP costs. `LoadBalancerController` hands out load balancer
addresses from a pool. `grove proxy` (node/proxy_cli.py) runs it.
"""

from .loadbalancer import AddressPool, LoadBalancerController, allocate
from .model import Endpoint, ServicePort, all_service_ports, service_ports
from .netfilter import Iptables, NetfilterError
from .proxier import Proxier, ProxyConfig, cleanup_host
from .rules import RuleConfig, Ruleset, compute_rules, restore_text

__all__ = [
    "AddressPool",
    "Endpoint",
    "Iptables",
    "LoadBalancerController",
    "NetfilterError",
    "ProxyConfig",
    "Proxier",
    "RuleConfig",
    "Ruleset",
    "ServicePort",
    "all_service_ports",
    "allocate",
    "cleanup_host",
    "compute_rules",
    "restore_text",
    "service_ports",
]
