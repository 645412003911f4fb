"""`grove kv`: run store members, a local cluster, and a small etcdctl-like client.

Flags of `serve` mirror etcd's so etcd users feel at home; the client commands print what
`ETCDCTL_API=2 etcdctl` prints, including its `Error:  100: Key not found (/k) [7]` lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time

import click

DEFAULT_STATE_DIR = os.path.join(".grove", "kv")
ENDPOINTS_FILE = "endpoints"
CLIENT_TLS_FILE = "client-tls.json"  # the local cluster's --ca-file/--cert-file/--key-file for clients


def _urls(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def default_endpoints() -> str:
    for var in ("GROVE_KV_ENDPOINTS", "ETCDCTL_ENDPOINTS"):
        if os.environ.get(var):
            return os.environ[var]
    path = os.path.join(DEFAULT_STATE_DIR, ENDPOINTS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    return "http://127.0.0.1:2379"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def kv() -> None:
    """The Raft key-value store (etcd v2 API): run members and talk to them."""


# ----------------------------------------------------------------------- serve
@kv.command()
@click.option("--name", default="default", show_default=True, help="Human-readable name of this member.")
@click.option("--data-dir", default=None, help="Where the journal and snapshots live (default: NAME.grove).")
@click.option("--listen-client-urls", default="http://127.0.0.1:2379", show_default=True)
@click.option("--advertise-client-urls", default=None, help="Client URLs told to others (default: listen).")
@click.option("--listen-peer-urls", default="http://127.0.0.1:2380", show_default=True)
@click.option(
    "--initial-advertise-peer-urls", default=None, help="Peer URL told to others (default: listen)."
)
@click.option("--initial-cluster", default="", help="NAME=PEER_URL,... of every member at bootstrap.")
@click.option(
    "--initial-cluster-state", type=click.Choice(["new", "existing"]), default="new", show_default=True
)
@click.option("--initial-cluster-token", default="grove-cluster", show_default=True)
@click.option("--discovery", default=None, help="Bootstrap through an etcd discovery URL.")
@click.option(
    "--history-size",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Events kept for watches from a past index.",
)
@click.option(
    "--snapshot-count",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Raft log entries between snapshots (log compaction).",
)
@click.option("--heartbeat-interval", default=50, show_default=True, type=click.IntRange(min=1), help="ms")
@click.option("--election-timeout", default=400, show_default=True, type=click.IntRange(min=10), help="ms")
@click.option(
    "--raft-tick-ms",
    default=None,
    type=click.FloatRange(min=0.5),
    help="Longest the Raft thread sleeps between timer checks (sockets wake it at once).",
)
@click.option(
    "--request-timeout", default=5.0, show_default=True, type=float, help="Seconds a write may wait."
)
@click.option(
    "--peer-password-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Encrypt peer traffic with the password in this file (all members must share it).",
)
@click.option(
    "--cert-file", default=None, type=click.Path(dir_okay=False), help="Certificate of the https client port."
)
@click.option("--key-file", default=None, type=click.Path(dir_okay=False), help="Key of --cert-file.")
@click.option(
    "--trusted-ca-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Require client certificates signed by this CA (as etcd 3.4 does); also trusted for other members.",
)
@click.option(
    "--client-cert-auth", is_flag=True, help="Require client certificates (needs --trusted-ca-file)."
)
@click.option(
    "--auto-tls", is_flag=True, help="Without --cert-file: serve https with a self-signed certificate."
)
@click.option(
    "--batch-proposals/--no-batch-proposals",
    default=True,
    show_default=True,
    help="Propose the writes that arrive together as one Raft entry.",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(**o) -> None:
    """Run one store member (flags mirror etcd's)."""
    from .raft import RaftTuning
    from .server import (
        ClientTLS,
        MemberConfig,
        TLSConfigError,
        check_client_tls,
        parse_initial_cluster,
        peer_addr,
    )
    from .server import serve as run

    logging.basicConfig(level=o["log_level"].upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pysyncobj").setLevel(logging.WARNING if o["log_level"] != "debug" else logging.DEBUG)
    listen_client = _urls(o["listen_client_urls"])
    listen_peer = _urls(o["listen_peer_urls"])
    try:
        for u in listen_peer + _urls(o["initial_advertise_peer_urls"] or ""):
            peer_addr(u)
        if o["initial_cluster"]:
            parse_initial_cluster(o["initial_cluster"])
        client_tls = ClientTLS(
            o["cert_file"], o["key_file"], o["trusted_ca_file"], o["client_cert_auth"], o["auto_tls"]
        )
        check_client_tls(listen_client + _urls(o["advertise_client_urls"] or ""), client_tls)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    password = None
    if o["peer_password_file"]:
        try:
            with open(o["peer_password_file"]) as f:
                password = f.read().strip()
        except OSError as exc:
            raise click.UsageError(f"cannot read --peer-password-file: {exc}") from None
    cfg = MemberConfig(
        name=o["name"],
        data_dir=o["data_dir"] or f"{o['name']}.grove",
        listen_client_urls=listen_client,
        advertise_client_urls=_urls(o["advertise_client_urls"] or o["listen_client_urls"]),
        listen_peer_urls=listen_peer,
        initial_advertise_peer_urls=_urls(o["initial_advertise_peer_urls"] or o["listen_peer_urls"]),
        initial_cluster=o["initial_cluster"],
        initial_cluster_state=o["initial_cluster_state"],
        initial_cluster_token=o["initial_cluster_token"],
        discovery=o["discovery"],
        history_size=o["history_size"],
        request_timeout=o["request_timeout"],
        peer_password=password,
        batch_proposals=o["batch_proposals"],
        client_tls=client_tls,
        tuning=RaftTuning(
            heartbeat=o["heartbeat_interval"] / 1000.0,
            election_timeout=o["election_timeout"] / 1000.0,
            snapshot_count=o["snapshot_count"],
            **({"tick": o["raft_tick_ms"] / 1000.0} if o["raft_tick_ms"] else {}),
        ),
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without it
        pass
    try:
        asyncio.run(run(cfg))
    except TLSConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve: {exc}") from None


# --------------------------------------------------------------------- cluster
def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@kv.command()
@click.option("--size", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option("--data-dir", default=DEFAULT_STATE_DIR, show_default=True)
@click.option("--snapshot-count", default=None, type=int)
@click.option(
    "--auto-tls",
    is_flag=True,
    help="Serve https with a self-signed certificate made in DATA_DIR/tls (clients: --ca-file DATA_DIR/tls/cert.pem).",
)
@click.option(
    "--cert-file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Serve https with this certificate on every member.",
)
@click.option(
    "--key-file", default=None, type=click.Path(exists=True, dir_okay=False), help="Key of --cert-file."
)
@click.option(
    "--trusted-ca-file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Members require client certificates signed by this CA (as etcd 3.4 does).",
)
@click.option(
    "--client-cert-auth",
    is_flag=True,
    help="Require client certificates (with --auto-tls: the generated certificate is the CA and client cert).",
)
@click.option(
    "--ca-file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="CA that signed --cert-file, for the launcher's checks (default: --trusted-ca-file, else --cert-file).",
)
def cluster(
    size: int,
    data_dir: str,
    snapshot_count: int | None,
    auto_tls: bool,
    cert_file: str | None,
    key_file: str | None,
    trusted_ca_file: str | None,
    client_cert_auth: bool,
    ca_file: str | None,
) -> None:
    """Run a local cluster of SIZE members in the foreground until Ctrl-C (data survives restarts)."""
    from rich.console import Console

    from .localcluster import ClusterError, ClusterTLS, GroveCluster

    console = Console(stderr=True, soft_wrap=True)
    os.makedirs(data_dir, exist_ok=True)
    ports = None
    if not os.path.exists(os.path.join(data_dir, "ports.json")):
        wanted = [(2379 + 10000 * i, 2380 + 10000 * i) for i in range(size)]
        if all(_port_free(p) for pair in wanted for p in pair):
            ports = wanted
    tls = None
    if auto_tls or cert_file or key_file or trusted_ca_file or client_cert_auth or ca_file:
        if bool(cert_file) != bool(key_file):
            raise click.UsageError("--cert-file and --key-file must be given together")
        if not (auto_tls or cert_file):
            raise click.UsageError("TLS flags need --cert-file/--key-file or --auto-tls")
        if client_cert_auth and not (trusted_ca_file or auto_tls):
            raise click.UsageError("--client-cert-auth needs --trusted-ca-file")
        tls = ClusterTLS(cert_file, key_file, trusted_ca_file, client_cert_auth, auto_tls, ca_file=ca_file)
    try:
        c = GroveCluster(size, data_dir, ports=ports, tls=tls)
    except (ClusterError, OSError, ValueError) as exc:
        raise click.ClickException(f"cannot prepare TLS: {exc}") from None
    with open(os.path.join(data_dir, "ports.json"), "w") as f:
        import json

        json.dump(list(zip(c.client_ports, c.peer_ports)), f)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    try:
        with console.status("starting members…") as status:
            c.start(timeout=60, progress=lambda msg: status.update(msg))
    except ClusterError as exc:
        console.print(f"[red]cluster failed to start:[/red] {exc}")
        sys.exit(1)
    with open(os.path.join(data_dir, ENDPOINTS_FILE), "w") as f:
        f.write(",".join(c.client_urls))
    tls_path = os.path.join(data_dir, CLIENT_TLS_FILE)
    if c.tls is not None:
        import json

        needs_cert = c.tls.client_cert_auth or c.tls.trusted_ca_file
        client_tls = {
            "endpoints": ",".join(c.client_urls),
            "ca_file": os.path.abspath(c.ca_file) if c.ca_file else None,
            "cert_file": os.path.abspath(c.tls.client_cert_file or c.tls.cert_file) if needs_cert else None,  # type: ignore[arg-type]
            "key_file": os.path.abspath(c.tls.client_key_file or c.tls.key_file) if needs_cert else None,  # type: ignore[arg-type]
        }
        with open(tls_path, "w") as f:
            json.dump(client_tls, f)
    elif os.path.exists(tls_path):
        os.remove(tls_path)
    leader = c.leader_index()
    console.print(
        f"[green]cluster of {size} is up[/green] in {time.monotonic() - t0:.1f}s; data in {data_dir}"
    )
    for i, name in enumerate(c.names):
        mark = "  (leader)" if i == leader else ""
        console.print(
            f"  {name}: client {c.client_urls[i]}  peer {c.peer_urls[i]}  log {c.log_path(i)}{mark}"
        )
    flags = ""
    if c.tls is not None:
        flags = f" --ca-file {c.ca_file}" if c.ca_file else ""
        if c.tls.client_cert_auth or c.tls.trusted_ca_file:  # members require a client certificate
            flags += f" --cert-file {c.tls.cert_file} --key-file {c.tls.key_file}"
    console.print(f"\ntry:  grove kv set /hello world --endpoints {c.client_urls[0]}{flags}")
    console.print(
        f"      ETCDCTL_API=2 etcdctl --endpoints {','.join(c.client_urls)}{flags} ls / --recursive"
    )
    console.print("Ctrl-C stops every member; the data stays for the next start.")
    try:
        while not stop["now"]:
            for i in range(size):
                if not c.is_running(i) and not stop["now"]:
                    console.print(f"[yellow]member {c.names[i]} exited; restarting it[/yellow]")
                    c.restart(i)
            time.sleep(0.2)
    finally:
        console.print("stopping members…")
        c.stop()
        console.print("stopped.")


# ---------------------------------------------------------------------- client
_TLS_META = "grove.kv.client_tls"


def _remember_tls(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    ctx.meta.setdefault(_TLS_META, {})[param.name] = value


_tls_options = [
    click.option(f"--{name}-file", f"{name}_file", default=None, envvar=f"ETCDCTL_{name.upper()}_FILE",
                 type=click.Path(dir_okay=False), expose_value=False, callback=_remember_tls, help=help_)
    for name, help_ in (
        ("ca", "Verify https endpoints with this CA bundle (or ETCDCTL_CA_FILE)."),
        ("cert", "Identify this client with this certificate (or ETCDCTL_CERT_FILE)."),
        ("key", "Key of --cert-file (or ETCDCTL_KEY_FILE)."),
    )
]  # fmt: skip


def endpoints_option(fn):
    """--endpoints and etcdctl v2's TLS flags (--ca-file, --cert-file, --key-file) of every client command."""
    for option in reversed(_tls_options):
        fn = option(fn)
    return click.option(
        "--endpoints", default=default_endpoints, show_default="local cluster",
        help="Comma-separated client URLs (or GROVE_KV_ENDPOINTS / ETCDCTL_ENDPOINTS).",
    )(fn)  # fmt: skip


def _local_cluster_tls(endpoints: str) -> dict[str, str]:
    """The TLS files `grove kv cluster` recorded, when talking to that cluster without TLS flags."""
    import json

    try:
        with open(os.path.join(DEFAULT_STATE_DIR, CLIENT_TLS_FILE)) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("endpoints") != endpoints:
        return {}
    return {k: saved[k] for k in ("ca_file", "cert_file", "key_file") if isinstance(saved.get(k), str)}


def _client(endpoints: str):
    from .client import SyncKVClient

    ctx = click.get_current_context(silent=True)
    tls = {k: v for k, v in (ctx.meta.get(_TLS_META, {}) if ctx is not None else {}).items() if v}
    if not tls:
        tls = _local_cluster_tls(endpoints)
    try:
        return SyncKVClient(_urls(endpoints), timeout=5.0, retry_deadline=5.0, **tls)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _run(fn):
    """Turn client errors into etcdctl-style one-line errors and exit codes."""
    from .client import ClusterUnavailable, EtcdError

    try:
        return fn()
    except EtcdError as err:
        click.echo(f"Error:  {err.error_code}: {err.message} ({err.cause}) [{err.index}]", err=True)
        sys.exit(4)
    except ClusterUnavailable as err:
        click.echo(f"Error:  cluster unavailable: {err}", err=True)
        sys.exit(4)


def print_response(action: str, node: dict, prev_node: dict | None) -> None:
    """etcdctl's "simple" output: the new value, or the old one for a delete."""
    if action != "delete":
        click.echo(node.get("value", ""))
    else:
        click.echo(f"PrevNode.Value: {(prev_node or {}).get('value', '')}")


@kv.command()
@endpoints_option
@click.option("--quorum", is_flag=True, help="Linearizable read through the Raft log.")
@click.argument("key")
def get(endpoints: str, quorum: bool, key: str) -> None:
    """Print the value of KEY."""
    with _client(endpoints) as c:
        r = _run(lambda: c.get(key, quorum=quorum))
    if r.node.get("dir"):
        click.echo(f"{r.node.get('key', '/')}: is a directory", err=True)
        sys.exit(1)
    click.echo(r.node.get("value", ""))


def _write_cmd(name: str, help_: str, **fixed):
    @kv.command(name=name, help=help_)
    @endpoints_option
    @click.option("--ttl", default=None, type=click.IntRange(min=0), help="Seconds until the key expires.")
    @click.option("--swap-with-value", default=None, help="Only if the current value is this.")
    @click.option(
        "--swap-with-index", default=None, type=int, help="Only if the current modifiedIndex is this."
    )
    @click.argument("key")
    @click.argument("value")
    def cmd(endpoints, ttl, swap_with_value, swap_with_index, key, value):
        with _client(endpoints) as c:
            if swap_with_value is not None or swap_with_index is not None:
                r = _run(
                    lambda: c.compare_and_swap(
                        key, value, prev_value=swap_with_value, prev_index=swap_with_index, ttl=ttl
                    )
                )
            else:
                r = _run(lambda: c.set(key, value, ttl=ttl, **fixed))
        click.echo(r.node.get("value", ""))

    return cmd


_write_cmd("set", "Set KEY to VALUE.")
_write_cmd("mk", "Create KEY with VALUE; fail if it exists.", prev_exist=False)
_write_cmd("update", "Update an existing KEY to VALUE.", prev_exist=True)


@kv.command()
@endpoints_option
@click.option("--ttl", default=None, type=click.IntRange(min=0))
@click.argument("key")
def mkdir(endpoints: str, ttl: int | None, key: str) -> None:
    """Create a directory."""
    with _client(endpoints) as c:
        _run(lambda: c.mkdir(key, ttl=ttl))


@kv.command()
@endpoints_option
@click.option("--dir", "is_dir", is_flag=True, help="Remove an empty directory.")
@click.option("--recursive", "-r", is_flag=True, help="Remove a directory and everything in it.")
@click.option("--with-value", default=None, help="Only if the current value is this.")
@click.option("--with-index", default=None, type=int, help="Only if the current modifiedIndex is this.")
@click.argument("key")
def rm(
    endpoints: str, is_dir: bool, recursive: bool, with_value: str | None, with_index: int | None, key: str
) -> None:
    """Remove KEY."""
    with _client(endpoints) as c:
        r = _run(
            lambda: c.delete(
                key, recursive=recursive, dir=is_dir, prev_value=with_value, prev_index=with_index
            )
        )
    if not r.node.get("dir"):
        print_response(r.action, r.node, r.prev_node)


@kv.command()
@endpoints_option
@click.option("--recursive", "-r", is_flag=True)
@click.option("--sort", is_flag=True, help="Sort by key.")
@click.option("-p", "slash", is_flag=True, help="Append a slash to directories.")
@click.argument("key", default="/")
def ls(endpoints: str, recursive: bool, sort: bool, slash: bool, key: str) -> None:
    """List a directory."""
    with _client(endpoints) as c:
        r = _run(lambda: c.get(key, recursive=recursive, sorted=sort))

    def show(node: dict) -> None:
        for child in node.get("nodes", []):
            click.echo(child["key"] + ("/" if slash and child.get("dir") else ""))
            if recursive and child.get("dir"):
                show(child)

    if not r.node.get("dir"):
        click.echo(r.node["key"])
    else:
        show(r.node)


@kv.command()
@endpoints_option
@click.option("--forever", "-f", is_flag=True, help="Keep watching; print every change.")
@click.option("--recursive", "-r", is_flag=True, help="Watch everything under KEY.")
@click.option("--after-index", default=0, type=click.IntRange(min=0), help="Start after this index.")
@click.argument("key")
def watch(endpoints: str, forever: bool, recursive: bool, after_index: int, key: str) -> None:
    """Wait for a change under KEY and print the new value (with --forever: every change)."""
    index = after_index + 1 if after_index else None
    with _client(endpoints) as c:
        if not forever:
            r = _run(lambda: c.watch(key, index=index, recursive=recursive))
            if recursive:
                click.echo(f"[{r.action}] {r.node.get('key')}")
            print_response(r.action, r.node, r.prev_node)
            return
        try:
            stream = c.watch_stream(key, index=index, recursive=recursive)

            def loop():
                for ev in stream:
                    if recursive:
                        click.echo(f"[{ev.action}] {ev.node.get('key')}")
                    print_response(ev.action, ev.node, ev.prev_node)

            _run(loop)
        except KeyboardInterrupt:
            pass


@kv.group()
def member() -> None:
    """List, add and remove members."""


@member.command("list")
@endpoints_option
def member_list(endpoints: str) -> None:
    with _client(endpoints) as c:
        members = _run(c.members)
        leader = _run(c.leader) or {}
    for m in members:
        click.echo(
            f"{m['id']}: name={m.get('name', '')} peerURLs={','.join(m['peerURLs'])} "
            f"clientURLs={','.join(m.get('clientURLs', []))} isLeader={str(m['id'] == leader.get('id')).lower()}"
        )


@member.command("add")
@endpoints_option
@click.argument("name")
@click.argument("peer_urls")
def member_add(endpoints: str, name: str, peer_urls: str) -> None:
    """Add NAME with PEER_URLS; then start it with --initial-cluster-state existing."""
    with _client(endpoints) as c:
        m = _run(lambda: c.add_member(_urls(peer_urls)))
        members = _run(c.members)
    click.echo(f"Added member named {name} with ID {m['id']} to cluster\n")
    conf = [f"{x.get('name') or name}={x['peerURLs'][0]}" for x in members]
    click.echo(f'ETCD_NAME="{name}"')
    click.echo(f'ETCD_INITIAL_CLUSTER="{",".join(conf)}"')
    click.echo('ETCD_INITIAL_CLUSTER_STATE="existing"')
    click.echo(
        f"\nstart it with: grove kv serve --name {name} --listen-peer-urls {_urls(peer_urls)[0]} "
        f"--initial-cluster {','.join(conf)} --initial-cluster-state existing ..."
    )


@member.command("remove")
@endpoints_option
@click.argument("member_id")
def member_remove(endpoints: str, member_id: str) -> None:
    with _client(endpoints) as c:
        _run(lambda: c.remove_member(member_id))
    click.echo(f"Removed member {member_id} from cluster")


@kv.group()
def endpoint() -> None:
    """Check endpoints."""


@endpoint.command("health")
@endpoints_option
def endpoint_health(endpoints: str) -> None:
    bad = 0
    with _client(endpoints) as c:
        for url in _urls(endpoints):
            t0 = time.perf_counter()
            try:
                ok = c.health(url)
            except Exception as exc:  # one line per endpoint, whatever went wrong
                ok, why = False, str(exc)
            else:
                why = "" if ok else "unhealthy result"
            took = (time.perf_counter() - t0) * 1000
            if ok:
                click.echo(f"{url} is healthy: successfully committed proposal: took = {took:.3f}ms")
            else:
                bad += 1
                click.echo(f"{url} is unhealthy: {why}")
    if bad:
        sys.exit(1)
