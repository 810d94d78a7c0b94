#!/bin/sh
# banger-virtio-ports: /dev/virtio-ports/<name> for every virtio-serial port, the link
# udev's rule makes (KERNEL=="vport*", SYMLINK+="virtio-ports/$attr{name}"), for a
# systemd guest that runs no udev (banger's images mask it: see images/leanboot.py).
# The QEMU guest agent opens /dev/virtio-ports/org.qemu.guest_agent.0; its unit
# (qemu-guest-agent.service, replaced by banger's) runs after this one.
#
# POSIX sh only: it runs under dash in Debian images and busybox sh elsewhere.

# (Both overridable only so the host's tests can run this against made-up files.)
SYS=${BANGER_SYSFS:-/sys}
DEV=${BANGER_DEV:-/dev}

for port in "$SYS"/class/virtio-ports/*; do
	name=
	read -r name <"$port/name" 2>/dev/null
	# The name is the host's (QEMU's -device virtserialport,name=): a path component only.
	case "$name" in "" | */* | . | ..) continue ;; esac
	mkdir -p "$DEV/virtio-ports" && ln -sfn "../${port##*/}" "$DEV/virtio-ports/$name"
done
exit 0
