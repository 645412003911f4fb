"""grove's scheduler: places pending pods on nodes and binds them through `pods/binding`.

The decision is a pure core — `snapshot` (the cluster as scheduling sees it), `filters` and
`scores` (small named checks and rankers), `framework` (filter, score, pick) and `assume` (the
assumed-pod cache) — and `scheduler` is the process around it: informers, a scheduling queue,
binds, FailedScheduling events and leader election. `grove scheduler` starts it (`cli`).
"""
