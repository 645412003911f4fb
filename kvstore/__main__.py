"""`python -m kvstore ...` is `grove kv ...` (used to start members as subprocesses)."""

from kvstore.cli import kv

kv(prog_name="grove kv")
