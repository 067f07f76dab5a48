#!/bin/sh
# The node's engine. A node killed whole and started again keeps its filesystem, with the pid
# files of the engine and containerd that died with it: the engine refuses to start beside a
# pid file, so they go first. Arguments: dockerd's own.
set -e
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
exec dockerd "$@"
