#!/usr/bin/env bash
# A Debian 12 (bookworm) base image made here, for hosts with no image registry:
# debootstrap (minbase) from the Debian archive, then `docker import`.  Idempotent:
# an image already tagged is reused.  Prints the image reference on stdout.
# Needs root, debootstrap and an engine (DOCKER_HOST, or scripts/start-dockerd.sh's).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image=${SPAWNWATCH_BASE_IMAGE:-spawnwatch-debian:12}
mirror=${SPAWNWATCH_BASE_MIRROR:-http://deb.debian.org/debian}
cache=${SPAWNWATCH_BASE_CACHE:-/var/cache/spawnwatch-base}

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

use_engine
reuse_image "$image"
# One build at a time: a second caller (make test runs two workers) waits, then reuses it.
exec 9>/run/spawnwatch-base-image.lock
flock 9
reuse_image "$image"
if ! command -v debootstrap >/dev/null; then
    say "debootstrap is not installed (sudo make setup)"
    exit 1
fi

root=$(mktemp -d /var/tmp/spawnwatch-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$cache"
say "debootstrap bookworm (minbase) into $root"
debootstrap --variant=minbase --cache-dir="$cache" bookworm "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# What an image does not keep: apt's lists and caches (the Dockerfile updates its own).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
say "importing $image"
tar -C "$root" --numeric-owner -c . | docker_cli import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "$image"
