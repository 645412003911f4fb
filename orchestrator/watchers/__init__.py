"""How every grove component sees the cluster: informers (list + watch into an indexed cache) feed
object keys to work queues, and a controller is one `sync(key)` function over them.

    factory = InformerFactory(client)
    pods = factory.informer(*PODS, indexers={"byNode": index_by_node})
    ctl = Controller("replicaset", sync_replicaset, workers=2)
    ctl.watch(factory.informer(*REPLICASETS))
    ctl.watch(pods, owner_key("ReplicaSet"))
    factory.start()
    await ctl.run()
"""

from .controller import Controller, InformerFactory, KeyFn, SyncFn, owner_key, wait_synced
from .informer import (
    Handler,
    IndexFn,
    Informer,
    index_by_controller,
    index_by_namespace,
    index_by_node,
    object_key,
    resource_version,
    split_key,
)
from .queue import QueueShutDown, WorkQueue, WorkQueueMetrics, run_workers

__all__ = [
    "Controller",
    "Handler",
    "IndexFn",
    "Informer",
    "InformerFactory",
    "KeyFn",
    "QueueShutDown",
    "SyncFn",
    "WorkQueue",
    "WorkQueueMetrics",
    "index_by_controller",
    "index_by_namespace",
    "index_by_node",
    "object_key",
    "owner_key",
    "resource_version",
    "run_workers",
    "split_key",
    "wait_synced",
]
