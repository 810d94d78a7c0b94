#!/bin/sh
# banger-workdisk: mount the VM's work disk on /root (its home, authorized_keys and
# sshd's per-VM host key), for both init modes: the fast init runs it before sshd,
# and banger-workdisk.service runs it under systemd.
#
# Why not /etc/fstab under systemd: an fstab mount of /dev/vdb binds to the udev
# device unit dev-vdb.device, which appears only once udevd has started and worked
# through the coldplug of every device. Under emulation that was ~5 s after the
# kernel had made the disk (the node is in devtmpfs from the start), and sshd,
# which needs the host key on this disk, waited for it on every boot.
#
# The device is /dev/vdb unless banger.work=<device> is on the kernel command line.
# Waits up to 5 s for the node (a module still loading), mounts, logs to the
# console. Exits 0 when /root is already a mount point; 1 when it cannot mount
# (the guest keeps a console; sshd then has no host key and says so).
#
# POSIX sh only: it runs under dash in Debian images and busybox sh elsewhere.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin

log() {
	echo "banger-workdisk: $*" >/dev/kmsg 2>/dev/null || echo "banger-workdisk: $*"
}

# Builtins only up to the mount (each program run costs ~50 ms under emulation).
work=/dev/vdb
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	banger.work=*) work=${arg#banger.work=} ;;
	esac
done
while read -r _dev mnt _rest; do
	[ "$mnt" = /root ] && exit 0
done </proc/mounts
i=0
while [ ! -b "$work" ] && [ "$i" -lt 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
if mount -t ext4 -o rw,relatime "$work" /root; then
	log "mounted $work on /root"
	exit 0
fi
log "cannot mount the work disk $work on /root; sshd has no host key without it"
exit 1
