#!/usr/bin/env bash
# The Vagrant reproduction from the host, behind make's vagrant-* targets (root):
#   vagrant/vm.sh box       build and register the local box unless it is there already
#   vagrant/vm.sh demo      boot and provision the VM, show the alert and the spawn tree;
#                           the VM stays up (`vagrant ssh` from vagrant/) until `destroy`
#   vagrant/vm.sh test      the same in a fresh VM, asserting that the alert names the
#                           leaking supervisor and its container; destroys the VM; timings
#   vagrant/vm.sh destroy   remove the VM, stop the libvirt daemons host.sh started
#
# SPAWNWATCH_BOX picks the box; by default the local one, named after a digest of what
# goes into it, so that a change to build-box.sh, guest-packages.txt or the image script
# makes a new box.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
guest_repo=/srv/spawnwatch  # as in the Vagrantfile
wheels="$here/.cache/wheels"
local_box="spawnwatch-bookworm-$(cat "$here/build-box.sh" "$here/guest-packages.txt" "$repo/scripts/build-test-image.sh" \
    "$repo/scripts/lib.sh" |
    sha256sum | cut -c1-12)"
export SPAWNWATCH_BOX=${SPAWNWATCH_BOX:-$local_box}
export VAGRANT_CWD=$here

say() { printf 'vagrant: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (libvirt, loop mounts): sudo make vagrant-${1:-demo}"
    exit 1
fi

box() {
    if vagrant box list --machine-readable | awk -F, '$3 == "box-name" {print $4}' | grep -qxF "$SPAWNWATCH_BOX"; then
        return 0
    fi
    if [ "$SPAWNWATCH_BOX" != "$local_box" ]; then
        return 0  # a public box: `vagrant up` downloads it
    fi
    "$here/host.sh" start
    "$here/build-box.sh" "$SPAWNWATCH_BOX" "$guest_repo"
}

# spawnwatch's wheel (built through its sdist, as a release is) and its dependencies,
# for a guest without PyPI (provision.sh installs them).  The box's python is Debian
# 12's, like this host's.  The wheel is rebuilt every time: the checkout may have changed.
download_wheels() {
    local stamp="$wheels/.downloaded"
    mkdir -p "$wheels"
    rm -f "$wheels"/spawnwatch-*.whl
    say "building spawnwatch's wheel for the guest"
    "$repo/.venv/bin/python" -m build --outdir "$wheels/dist" "$repo" >"$wheels/build.log" 2>&1 ||
        { tail -n 30 "$wheels/build.log" >&2; exit 1; }
    mv "$wheels"/dist/spawnwatch-*.whl "$wheels/" && rm -rf "$wheels/dist"
    [ -e "$stamp" ] && [ "$stamp" -nt "$repo/pyproject.toml" ] && return 0
    say "downloading its dependencies for the guest"
    /usr/bin/python3 -m pip download --disable-pip-version-check --quiet --only-binary=:all: \
        --dest "$wheels" "$wheels"/spawnwatch-*.whl 2>"$wheels/pip.log" ||
        { cat "$wheels/pip.log" >&2; exit 1; }
    touch "$stamp"
}

vagrant_up() {
    "$here/host.sh" start
    "$here/host.sh" driver >/dev/null  # the Vagrantfile reads the answer
    vagrant up --provider=libvirt "$@"
}

check() {
    vagrant ssh -c "sudo python3 $guest_repo/vagrant/guest_check.py"
}

destroy() {
    "$here/host.sh" start
    vagrant destroy --force
    "$here/host.sh" stop
}

demo() {
    box
    download_wheels
    vagrant_up --provision
    check
}

test_from_scratch() {
    local started=$SECONDS step timings=()
    timed() {  # timed LABEL COMMAND...: run it and note how long it took
        local label=$1
        shift
        step=$SECONDS
        "$@"
        timings+=("$label $((SECONDS - step)) s")
    }
    trap destroy EXIT
    trap 'exit 1' INT TERM
    "$here/host.sh" start
    vagrant destroy --force >/dev/null
    timed box box
    timed wheels download_wheels
    timed "vagrant up" vagrant_up --no-provision
    timed provision vagrant provision
    timed "alert check" check
    trap - EXIT
    timed destroy destroy
    say "vagrant-test passed in $((SECONDS - started)) s: $(printf '%s; ' "${timings[@]}")"
}

case "${1:-}" in
    box) box ;;
    demo) demo ;;
    test) test_from_scratch ;;
    destroy) destroy ;;
    *) echo "usage: $0 box|demo|test|destroy" >&2; exit 2 ;;
esac
