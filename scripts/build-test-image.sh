#!/usr/bin/env bash
# Build the container image the Docker tests run the leak reproduction in, from
# this host's files alone (no registry): busybox-static for a shell and coreutils,
# plus the host's node binary with its shared libraries and npm.
#
# Idempotent: the image is tagged with a digest of everything that goes into it,
# so a second run with unchanged inputs only re-points `latest` and returns.
# Prints the image reference on stdout.  Needs a running engine (DOCKER_HOST, or
# the one scripts/start-dockerd.sh finds or starts).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repository=${SPAWNWATCH_IMAGE_REPOSITORY:-spawnwatch-sim}
image_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

use_engine

busybox=/bin/busybox  # from busybox-static: the image has no libc of its own for it
node=$(command -v node || true)
npm_cli=$(command -v npm || true)
if [ ! -x "$busybox" ] || [ -z "$node" ] || [ -z "$npm_cli" ]; then
    say "needs busybox-static, node and npm on the host (sudo make setup)"
    exit 1
fi
node=$(readlink -f "$node")
# npm is a symlink to <prefix>/lib/node_modules/npm/bin/npm-cli.js
npm_dir=$(dirname "$(dirname "$(readlink -f "$npm_cli")")")
# Debian's own nodejs keeps modules node loads at start-up, and npm's dependencies,
# outside node_modules: the image needs those trees too where they exist.
debian_node_dirs=()
for dir in /usr/share/nodejs "/usr/lib/$(uname -m)-linux-gnu/nodejs"; do
    [ -d "$dir" ] && debian_node_dirs+=("$dir")
done
# Shared libraries of node, including the dynamic loader itself (the line without '=>').
mapfile -t libs < <(ldd "$node" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')

inputs_digest=$(
    {
        sha256sum "$0" "$here/lib.sh" "$busybox" "$node" "${libs[@]}"
        find "$npm_dir" "${debian_node_dirs[@]}" -type f -printf '%p %s %T@\n' | sort
    } | sha256sum | cut -c1-16
)
image="$repository:$inputs_digest"

reuse_image "$image" "$repository:latest"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/lib/node_modules,etc,root,tmp,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
# Applets are links to busybox; never let one of them (busybox lists itself) replace it.
"$busybox" --list-full | while read -r applet; do
    [ "$(basename "$applet")" = busybox ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

cp "$node" "$root/usr/bin/node"
for lib in "${libs[@]}"; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
for dir in "${debian_node_dirs[@]}"; do
    mkdir -p "$root$(dirname "$dir")"
    cp -a "$dir" "$root$dir"
done
ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

say "importing $image"
tar -C "$root" -c . | docker_cli import \
    --change "ENV PATH=$image_path" \
    --change "ENV HOME=/root" \
    --change 'CMD ["/bin/sh"]' \
    - "$image" >/dev/null
docker_cli tag "$image" "$repository:latest"
# Earlier builds would linger once `latest` moved: remove those older than a day.  A
# younger one may be the image of a test session running beside this one (another
# checkout of the project, with other inputs), which must not lose it mid-run.
day_ago=$(( $(date +%s) - 86400 ))
docker_cli images --format '{{.Repository}}:{{.Tag}} {{.CreatedAt}}' "$repository" |
while read -r stale created; do
    case "$stale" in
        "$image" | "$repository:latest") continue ;;
    esac
    # CreatedAt reads "2026-11-30 01:52:54 +0000 UTC": date(1) takes it without the zone name.
    created_s=$(date -d "${created% *}" +%s 2>/dev/null || echo 0)
    if [ "$created_s" -lt "$day_ago" ]; then
        docker_cli rmi "$stale" >/dev/null 2>&1 || true
    fi
done
echo "$image"
