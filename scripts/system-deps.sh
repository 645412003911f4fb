#!/usr/bin/env bash
# Install the Debian packages grove's tests and demo need, when missing (idempotent).
set -euo pipefail
need=()
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v iptables >/dev/null 2>&1 || need+=(iptables)   # the service proxy's rules
command -v ip >/dev/null 2>&1 || need+=(iproute2)         # load balancer addresses
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)  # tests look inside pods' network namespaces
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "grove: missing ${need[*]}; run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "grove: installing ${need[*]} from Debian…"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -x scripts/ensure-docker.sh ] || [ -f scripts/ensure-docker.sh ]; then
  bash scripts/ensure-docker.sh
fi
