#!/bin/sh
# banger-agent-vsock: the QEMU guest agent on vsock, for VMMs that give the guest a
# vsock device and no virtio-serial agent port (Firecracker). Started by the fast
# init and by banger-agent-vsock.service under systemd; exits 0, doing nothing,
# everywhere else (QEMU guests keep their virtio-serial qemu-ga, started as before).
#
# The host reaches it through Firecracker's hybrid vsock: it connects to the VM's
# vsock Unix socket and sends "CONNECT 1024"; the port is part of banger's guest
# contract (banger.guest.agent.VSOCK_PORT). qemu-ga listens on any CID
# (4294967295 = VMADDR_CID_ANY), so the guest CID the VMM assigns does not matter.
#
# POSIX sh only: it runs under dash in Debian images and busybox sh elsewhere.

PORT=1024
# (Both overridable only so the host's tests can run this against a made-up sysfs.)
QEMU_GA=${BANGER_QEMU_GA:-/usr/sbin/qemu-ga}
SYS=${BANGER_SYSFS:-/sys}

[ -x "$QEMU_GA" ] || exit 0
# A virtio-serial agent port (QEMU): that qemu-ga is the channel.
# (read, not $(cat): the fast init starts this beside sshd, and under emulation
# every cat is a program run, ~50 ms of CPU taken from sshd's start.)
for name in "$SYS"/class/virtio-ports/*/name; do
	value=
	{ read -r value <"$name"; } 2>/dev/null
	[ "$value" = org.qemu.guest_agent.0 ] && exit 0
done
# A virtio vsock device (virtio device id 19) or nothing to do.
found=
for dev in "$SYS"/bus/virtio/devices/*/device; do
	value=
	{ read -r value <"$dev"; } 2>/dev/null
	[ "$value" = 0x0013 ] && found=1
done
[ -n "$found" ] || exit 0
mkdir -p /run/qemu-ga 2>/dev/null
echo "banger-agent-vsock: starting the guest agent on vsock port $PORT" >/dev/kmsg 2>/dev/null
exec "$QEMU_GA" -m vsock-listen -p "4294967295:$PORT" -t /run/qemu-ga
