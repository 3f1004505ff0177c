#!/usr/bin/env bash
# The spawnwatch image (deploy/container/Dockerfile) from this checkout: a wheel built
# with `python -m build`, installed into Debian 12's python with python3-bpfcc.
# BASE (the base image) defaults to the local Debian 12 of scripts/build-base-image.sh.
# Idempotent: the image is tagged with a digest of what goes into it, and reused.
# Prints the image reference on stdout.  PYTHON: a python with `build` (the venv's).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
python=${PYTHON:-$repo/.venv/bin/python}

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

use_engine
base=${BASE:-$("$here/build-base-image.sh")}
version=$("$python" -c 'import spawnwatch; print(spawnwatch.__version__)')
digest=$(
    {
        echo "$base $(docker_cli image inspect -f '{{.Id}}' "$base")"
        cd "$repo" && git ls-files -z --cached --others --exclude-standard src bpf pyproject.toml README.md LICENSE LICENSES deploy/container \
            | xargs -0 sha256sum
    } | sha256sum | cut -c1-12
)
image="spawnwatch:$version-$digest"
reuse_image "$image" "spawnwatch:$version"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
say "building the wheel and fetching its dependencies"
# Fetched here, for Debian 12's python (this venv's, made from it): the build itself
# then needs no package index.
# Through an sdist (python -m build's default): the wheel is built in a clean tree, so
# nothing stale from the checkout's build/ can slip into it.
if ! { "$python" -m build --outdir "$context/dist" "$repo" \
        && mkdir "$context/wheels" && mv "$context"/dist/spawnwatch-*.whl "$context/wheels/" \
        && "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
            --dest "$context/wheels" "$context"/wheels/spawnwatch-*.whl; } >"$context/build.log" 2>&1; then
    tail -n 30 "$context/build.log" >&2
    exit 1
fi
cp "$repo/deploy/container/Dockerfile" "$context/"
say "building $image on $base"
# The build's RUN steps reach Debian's archive and PyPI through the host's network:
# the engine may have no bridge of its own.
docker_cli build --network host --build-arg "BASE=$base" -t "$image" "$context" >"$context/docker.log" 2>&1 \
    || { tail -n 30 "$context/docker.log" >&2; exit 1; }
docker_cli tag "$image" "spawnwatch:$version"
echo "$image"
