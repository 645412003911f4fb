"""The `grove` command.

Each part of grove contributes its own click command; this module only knows their names and
imports them lazily, so `grove kv get` does not pay for importing the orchestrator or Docker.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "kv": "kvstore.cli:kv",
    "bench": "bench.cli:bench",
    "images": "node.images:images",
    "apiserver": "orchestrator.cli:apiserver",
    "kubeconfig": "orchestrator.cli:kubeconfig",
    "certs": "grove.certs:certs",
    "scheduler": "orchestrator.scheduler.cli:scheduler",
    "controllers": "orchestrator.controllers.cli:controllers",
    "node": "node.cli:node",
    "proxy": "node.proxy_cli:proxy",
    "dns": "node.proxy_cli:dns",
    "up": "grove.up:up",
    "down": "grove.up:down",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="grove")
def main() -> None:
    """grove — a container orchestrator on its own Raft key-value store."""


if __name__ == "__main__":
    main()
