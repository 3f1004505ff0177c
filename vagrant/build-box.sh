#!/usr/bin/env bash
# Build a Debian 12 (bookworm) box for vagrant-libvirt from Debian's archive alone and
# register it with Vagrant, for machines that cannot reach Vagrant Cloud.
#
#   vagrant/build-box.sh NAME GUEST_REPO     (root; `make vagrant-box` picks both)
#
# The box: debootstrap'ed bookworm with the cloud kernel, systemd, systemd-networkd
# (DHCP), openssh-server and a `vagrant` user holding Vagrant's insecure public key,
# on one ext4 partition booted by extlinux, as qcow2.  It also carries every package
# in guest-packages.txt plus the headers of its own kernel, so provisioning works
# without network, and the leak reproduction's container image in its Docker store
# (built as GUEST_REPO/scripts/build-test-image.sh will want it).  Older boxes of the same family (NAME minus its last -suffix) are
# removed once NAME is registered.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
name=${1:?usage: build-box.sh BOX_NAME GUEST_REPO}
guest_repo=${2:?usage: build-box.sh BOX_NAME GUEST_REPO}
mirror=${SPAWNWATCH_BOX_MIRROR:-http://deb.debian.org/debian}
disk_size=${SPAWNWATCH_BOX_DISK:-8G}
cache=${SPAWNWATCH_BOX_CACHE:-/var/cache/spawnwatch-box}
work=$(mktemp -d /var/tmp/spawnwatch-box.XXXXXX)
root="$work/root"
partition_offset=$((1024 * 1024))
insecure_key=$(dpkg -L vagrant 2>/dev/null | grep -m1 '/keys/vagrant\.pub$' || true)

say() { printf 'build-box: [%3d s] %s\n' "$SECONDS" "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (debootstrap, loop mounts)"
    exit 1
fi
if [ -z "$insecure_key" ] || [ ! -r "$insecure_key" ]; then
    say "Vagrant's insecure public key not found (is the vagrant package installed?)"
    exit 1
fi

mounts=()
dockerd_pid=""
cleanup() {
    local i
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" || true
    fi
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount -l "${mounts[i]}" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

mount_at() {  # mount_at TARGET MOUNT-ARGS...: mount and remember it for cleanup
    local target=$1
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    mounts+=("$target")
}

started=$SECONDS
say "partitioning a $disk_size disk"
raw="$work/disk.raw"
truncate -s "$disk_size" "$raw"
printf 'label: dos\nstart=%d, type=83, bootable\n' $((partition_offset / 512)) | sfdisk -q "$raw"
# extlinux and old kernels cannot read these newer ext4 features.
mkfs.ext4 -q -L root -O ^64bit,^metadata_csum_seed,^orphan_file -E offset=$partition_offset "$raw" \
    $(( ($(stat -c %s "$raw") - partition_offset) / 1024 ))k
uuid=$(blkid -p -O $partition_offset -s UUID -o value "$raw")
mount_at "$root" -o loop,offset=$partition_offset "$raw"

say "debootstrap bookworm"
mkdir -p "$cache/debootstrap" "$cache/apt"
debootstrap --variant=minbase --cache-dir="$cache/debootstrap" \
    --include=systemd-sysv,udev,dbus,kmod,openssh-server,sudo,rsync,ca-certificates,iproute2,procps,less,netbase,initramfs-tools,zstd \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

mount_at "$root/proc" -t proc proc
mount_at "$root/sys" -t sysfs sysfs
mount_at "$root/dev" --bind /dev
mount_at "$root/dev/pts" --bind /dev/pts
mount_at "$root/var/cache/apt/archives" --bind "$cache/apt"
in_root() { LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"; }
# Services must not start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://security.debian.org/debian-security bookworm-security main
EOF
echo 'APT::Install-Recommends "false";' >"$root/etc/apt/apt.conf.d/90no-recommends"

say "installing the cloud kernel and the guest packages"
mapfile -t packages < <(grep -v -e '^#' -e '^[[:space:]]*$' "$here/guest-packages.txt")
{
    in_root apt-get update -q
    in_root apt-get install -y -q linux-image-cloud-amd64
    kernel=$(basename "$(ls -d "$root"/lib/modules/*-cloud-amd64)")
    in_root apt-get install -y -q "linux-headers-$kernel" "${packages[@]}" systemd-resolved
} >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log" >&2; exit 1; }

say "configuring kernel $kernel, network, ssh and the vagrant user"
echo spawnwatch >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tspawnwatch\n' >"$root/etc/hosts"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"
cat >"$root/etc/systemd/network/80-dhcp.network" <<'EOF'
[Match]
Name=eth* en*

[Network]
DHCP=yes
EOF
# Every VM gets its own machine id and ssh host keys on first boot.
: >"$root/etc/machine-id"
rm -f "$root"/etc/ssh/ssh_host_*
mkdir -p "$root/etc/systemd/system/ssh.service.d"
# The keys must exist before the unit's own `sshd -t` check.
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$root/etc/systemd/system/ssh.service.d/host-keys.conf"
echo 'UseDNS no' >"$root/etc/ssh/sshd_config.d/vagrant.conf"
in_root systemctl enable -q systemd-networkd systemd-resolved ssh
in_root useradd --create-home --shell /bin/bash --groups sudo,docker vagrant
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/vagrant"
chmod 0440 "$root/etc/sudoers.d/vagrant"
install -d -m 0700 -o 1000 -g 1000 "$root/home/vagrant/.ssh"
install -m 0600 -o 1000 -g 1000 "$insecure_key" "$root/home/vagrant/.ssh/authorized_keys"

# The reproduction's image takes minutes to build under emulation, so build it now, from
# the box's own busybox, node and npm, into the box's Docker store, with a dockerd of this
# host (Debian 12's, like the box's).  The script runs from the path the guest will have
# it at, which is part of the image's digest: the guest then finds the image ready.
say "building the reproduction's container image"
docker_run="$work/docker"
mkdir -p "$docker_run" "$root$guest_repo/scripts"
cp "$repo/scripts/build-test-image.sh" "$repo/scripts/lib.sh" "$root$guest_repo/scripts/"
mount_at "$root/run/spawnwatch-box" --bind "$docker_run"
dockerd --data-root "$root/var/lib/docker" --exec-root "$docker_run/exec" --pidfile "$docker_run/dockerd.pid" \
    --host "unix://$docker_run/docker.sock" --iptables=false --bridge=none >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 60); do
    docker --host "unix://$docker_run/docker.sock" info >/dev/null 2>&1 && break
    sleep 1
done
in_root env DOCKER_HOST=unix:///run/spawnwatch-box/docker.sock "$guest_repo/scripts/build-test-image.sh" \
    >/dev/null 2>"$work/image.log" || { cat "$work/dockerd.log" "$work/image.log" >&2; exit 1; }
kill "$dockerd_pid"
wait "$dockerd_pid" || true
dockerd_pid=""
rm -rf "${root:?}${guest_repo:?}"

say "installing extlinux"
mkdir -p "$root/boot/extlinux"
cat >"$root/boot/extlinux/extlinux.conf" <<EOF
DEFAULT debian
TIMEOUT 1
LABEL debian
    LINUX /boot/vmlinuz-$kernel
    INITRD /boot/initrd.img-$kernel
    APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200 net.ifnames=0
EOF
extlinux --install "$root/boot/extlinux" 2>/dev/null
dd if=/usr/lib/EXTLINUX/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none

rm -f "$root/usr/sbin/policy-rc.d"
# The package cache is bind-mounted from the host (kept for the next build), never in the box.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/log/*.log
ln -sf ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
for ((i = ${#mounts[@]} - 1; i > 0; i--)); do umount "${mounts[i]}"; done
fstrim "$root"
umount "$root"
mounts=()

say "writing the box"
mkdir -p "$work/box"
qemu-img convert -c -O qcow2 "$raw" "$work/box/box.img"
size_gib=$(( ($(stat -c %s "$raw") + (1 << 30) - 1) >> 30 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$size_gib" >"$work/box/metadata.json"
tar -C "$work/box" -cf "$work/spawnwatch.box" metadata.json box.img
say "box is $(du -m "$work/spawnwatch.box" | cut -f1) MiB, built in $((SECONDS - started)) s"

vagrant box add --force --name "$name" "$work/spawnwatch.box" >/dev/null
say "registered as $name"

# Drop older builds of this box and their copies in libvirt's storage pool.
family=${name%-*}
vagrant box list --machine-readable | awk -F, '$3 == "box-name" {print $4}' | while read -r old; do
    if [ "$old" != "$name" ] && [ "${old%-*}" = "$family" ]; then
        say "removing the old box $old"
        vagrant box remove --force --all "$old" >/dev/null || true
        virsh -q vol-list --pool default 2>/dev/null | awk '{print $1}' |
            { grep -F "${old//\//-VAGRANTSLASH-}_vagrant_box_image_" || true; } |
            while read -r volume; do virsh -q vol-delete --pool default "$volume" >/dev/null; done
    fi
done
