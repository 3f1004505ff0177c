# shellcheck shell=bash
# What the scripts that drive a Docker engine share (start-dockerd.sh and the image
# builds), sourced by each: messages on stderr under the script's name, the engine's
# client, the engine to use, and an image already built.  Their output stays theirs.

script_name=$(basename "$0" .sh)
lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf '%s: %s\n' "$script_name" "$*" >&2; }

# Debian's 20.10 client speaks the engine's API version; a newer client elsewhere
# on PATH negotiates down too, but the matching one avoids surprises.
docker_cli() {
    if [ -x /usr/bin/docker ]; then /usr/bin/docker "$@"; else docker "$@"; fi
}

# DOCKER_HOST, exported: the caller's, else the engine start-dockerd.sh finds or starts.
use_engine() {
    DOCKER_HOST=${DOCKER_HOST:-$("$lib_dir/start-dockerd.sh")}
    export DOCKER_HOST
}

# reuse_image IMAGE [ALSO]: when IMAGE is already built, tag it ALSO as well (if given),
# print it and end the script: nothing is built twice.
reuse_image() {
    docker_cli image inspect "$1" >/dev/null 2>&1 || return 0
    if [ $# -gt 1 ]; then
        docker_cli tag "$1" "$2"
    fi
    echo "$1"
    exit 0
}
