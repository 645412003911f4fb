#!/usr/bin/env bash
# Make sure a Docker Engine answers and Debian's static busybox is present (grove builds its
# images from it offline). Idempotent: installs docker.io / busybox-static only when missing and
# starts dockerd only when `docker info` gets no answer. Run as root on Debian 12.
#   DOCKER_WAIT   seconds to wait for a freshly started engine (default 60)
#   DOCKERD_LOG   where dockerd's output goes (default /var/log/grove-dockerd.log, else /tmp)
#   DOCKERD_ARGS  extra dockerd flags, e.g. its own --data-root and -H socket (with DOCKER_HOST)
set -euo pipefail

wait_s="${DOCKER_WAIT:-60}"
fail() {
  echo "ensure-docker: $*" >&2
  exit 1
}

apt_install() {
  [ "$(id -u)" = 0 ] || fail "$1 is missing; run as root or: sudo apt-get install -y $1"
  echo "ensure-docker: installing $1 from Debian…"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq "$1"; } >/dev/null || fail "apt-get could not install $1"
}

command -v dockerd >/dev/null 2>&1 || apt_install docker.io
command -v docker >/dev/null 2>&1 || fail "dockerd is installed but the docker CLI is not; install docker.io"
# grove needs the statically linked busybox (the plain busybox package is dynamically linked).
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed"; then
  apt_install busybox-static
fi

docker info >/dev/null 2>&1 && exit 0

[ "$(id -u)" = 0 ] || fail "no Docker Engine answers and only root can start dockerd"
log="${DOCKERD_LOG:-/var/log/grove-dockerd.log}"
if ! { : >>"$log"; } 2>/dev/null; then
  log=/tmp/grove-dockerd.log
fi
echo "ensure-docker: starting dockerd (log: $log)…"
# setsid: the engine must outlive this script and the make target that ran it.
# shellcheck disable=SC2086 # DOCKERD_ARGS is a list of flags
setsid nohup dockerd ${DOCKERD_ARGS:-} >>"$log" 2>&1 </dev/null &
pid=$!

deadline=$((SECONDS + wait_s))
until docker info >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    fail "dockerd exited at once: $(tail -n 1 "$log" 2>/dev/null || echo 'no log')"
  fi
  if ((SECONDS >= deadline)); then
    fail "dockerd started but did not answer within ${wait_s}s; see $log"
  fi
  sleep 0.2
done
echo "ensure-docker: Docker Engine is up"
