"""`make demo`: start a local three-member store, show writes, a watch and a failover, keep it running.

What a newcomer should see in a minute: keys written through one member and read through
another, a watch stream receiving changes, the leader killed and the cluster carrying on, and
the commands to talk to it themselves. Set GROVE_DEMO_EXIT=1 to stop after the tour.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from rich.console import Console

from kvstore.client import SyncKVClient
from kvstore.localcluster import GroveCluster

STATE_DIR = os.path.join(".grove", "demo-kv")


def main() -> None:
    console = Console(soft_wrap=True)
    console.rule("[bold]grove demo: a three-member Raft key-value store (etcd v2 API)")
    os.makedirs(STATE_DIR, exist_ok=True)
    cluster = GroveCluster(3, STATE_DIR)
    t0 = time.monotonic()
    with console.status("starting three members…") as status:
        cluster.start(timeout=60, progress=status.update)
    leader = cluster.leader_index()
    console.print(f"cluster up in {time.monotonic() - t0:.1f}s; leader is {cluster.names[leader]}")
    for i, url in enumerate(cluster.client_urls):
        console.print(f"  {cluster.names[i]}  {url}")
    eps = ",".join(cluster.client_urls)
    try:
        with SyncKVClient(cluster.client_urls) as kv:
            seen: list[str] = []
            start = kv.set("/demo/_start", "x").etcd_index + 1

            def watch() -> None:
                for ev in kv_watch.watch_stream("/demo", index=start, recursive=True):
                    seen.append(f"{ev.action} {ev.node['key']} = {ev.node.get('value')}")
                    if len(seen) >= 5:
                        return

            kv_watch = SyncKVClient(cluster.client_urls)
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            console.print("\n[bold]writes through different members[/bold]")
            for i, (k, v) in enumerate([("/demo/greeting", "hello"), ("/demo/config/replicas", "3")]):
                one = SyncKVClient([cluster.client_urls[i]])
                r = one.set(k, v)
                one.close()
                console.print(f"  set {k}={v} via {cluster.names[i]} -> modifiedIndex {r.node['modifiedIndex']}")
            r = kv.compare_and_swap("/demo/config/replicas", "5", prev_value="3")
            console.print(f"  compareAndSwap 3->5 -> {r.node['value']}")
            r = kv.set("/demo/session", "alive", ttl=2)
            console.print(f"  set /demo/session with ttl={r.node['ttl']}s (it will expire)")

            console.print("\n[bold]the leader dies[/bold]")
            leader = cluster.leader_index()
            t_kill = time.monotonic()
            cluster.kill(leader)
            r = kv.set("/demo/after-failover", "still-writable")
            console.print(
                f"  killed {cluster.names[leader]} (SIGKILL); next write acknowledged after "
                f"{(time.monotonic() - t_kill) * 1000:.0f} ms at index {r.node['modifiedIndex']}"
            )
            cluster.restart(leader)
            console.print(f"  restarted {cluster.names[leader]}; it catches up from its data dir")
            watcher.join(timeout=10)
            kv_watch.close()
            console.print("\n[bold]a recursive watch stream on /demo saw[/bold]")
            for line in seen:
                console.print(f"  {line}")
    except Exception as exc:  # show why, keep the members' logs for the user
        console.print(f"[red]demo failed:[/red] {exc}")
        for i in range(cluster.size):
            console.print(f"  log: {cluster.log_path(i)}")
        cluster.stop()
        raise SystemExit(1) from None

    console.print("\n[bold]talk to it yourself[/bold]")
    console.print(f"  .venv/bin/grove kv ls / --recursive --endpoints {eps}")
    console.print(f"  ETCDCTL_API=2 etcdctl --endpoints {eps} watch --forever --recursive /demo")
    console.print(f"  curl -s {cluster.client_urls[0]}/v2/keys/demo?recursive=true")
    if os.environ.get("GROVE_DEMO_EXIT"):
        cluster.stop()
        return
    console.print("\nthe cluster keeps running; Ctrl-C stops it (data stays in .grove/demo-kv)")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass
    console.print("stopping…")
    cluster.stop()


if __name__ == "__main__":
    main()
