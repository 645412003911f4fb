"""`python -m orchestrator apiserver ...` (the same commands as `grove apiserver`, `grove kubeconfig`)."""

import click

from orchestrator.cli import apiserver, kubeconfig


@click.group()
def main() -> None:
    """grove's control plane commands."""


main.add_command(apiserver)
main.add_command(kubeconfig)

if __name__ == "__main__":
    main()
