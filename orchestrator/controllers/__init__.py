"""grove's controllers: the control loops that move the cluster toward what its objects ask for.

One module per controller (replicaset, deployment, daemonset, endpoints, namespace,
nodelifecycle, podgc, garbagecollector), each a pure decision part tested over snapshots and a
thin `sync(key)` that reads informer caches and acts through the API client; `manager` runs
them in one process behind a leader-election Lease (`grove controllers`).
"""
