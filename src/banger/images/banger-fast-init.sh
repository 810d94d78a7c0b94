#!/bin/sh
# banger-fast-init: the PID 1 of banger's "fast" init mode (init=/sbin/banger-fast-init).
#
# About a third of systemd's boot time under emulation: mount the basics, mount
# the work disk on /root, start sshd, reap children. The network is already up:
# the banger initramfs applied the kernel "ip=" parameter and wrote
# /etc/hostname and /etc/resolv.conf before switch_root; a kernel booted without
# it (IP_PNP: "banger kernel build") applied ip= itself, and /sbin/banger-resolv
# writes resolv.conf and /etc/hostname from what it lists in /proc/net/pnp and
# the hostname it set.
#
# Stopping a fast guest: run "/sbin/banger-fast-init poweroff" (over SSH); it
# signals PID 1 (SIGTERM), which stops every process, syncs, unmounts the work
# disk, remounts / read-only and powers off through sysrq. SIGINT (what the
# kernel sends PID 1 on Ctrl-Alt-Del) does the same.
#
# POSIX sh only: it runs under dash in Debian images and busybox sh elsewhere.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022

log() {
	echo "banger-fast-init: $*" >/dev/kmsg 2>/dev/null || echo "banger-fast-init: $*"
}

# Seconds since the kernel started, without running cut.
uptime_s() {
	read -r up _idle </proc/uptime
	echo "$up"
}

if [ "${1:-}" = poweroff ]; then
	if [ "$$" = 1 ]; then
		echo "banger-fast-init: 'poweroff' is for a running guest, not for PID 1" >&2
		exit 2
	fi
	exec kill -TERM 1
fi
if [ "$#" -gt 0 ] && [ "$$" != 1 ]; then
	echo "usage: banger-fast-init poweroff" >&2
	exit 2
fi

poweroff_now() {
	log "powering off"
	# Everything but PID 1: sshd, sessions, tmux servers.
	kill -TERM -1 2>/dev/null
	# Give them up to 2 s (sshd is the one that matters), then force.
	i=0
	# (each "sleep" also reaps, so a dead sshd stops answering kill -0.)
	while [ "$i" -lt 20 ] && [ -n "${sshd_pid:-}" ] && kill -0 "$sshd_pid" 2>/dev/null; do
		sleep 0.1
		i=$((i + 1))
	done
	sleep 0.2
	kill -KILL -1 2>/dev/null
	sync
	umount /root 2>/dev/null || mount -o remount,ro /root 2>/dev/null
	mount -o remount,ro / 2>/dev/null
	sync
	echo o >/proc/sysrq-trigger
	# sysrq poweroff is asynchronous: never fall back into the main loop.
	while :; do sleep 1; done
}
trap poweroff_now TERM INT

# Every program run before sshd costs ~50 ms under emulation (exec, dynamic
# linking, translating code never run before), so the steps below use the
# shell's builtins where they can: two mounts instead of seven, no mountpoint,
# cat, cut, hostname or ip. /proc first: mount -a reads /proc/self/mountinfo to
# skip what is mounted already (/dev, when the kernel or the initramfs mounted
# devtmpfs). The table is a file finalize writes: libmount parses no pipe.
mount -t proc proc /proc
mount -a -T /etc/banger-fast-init.fstab
# banger's kernel command line says rw; a root mounted read-only is made writable.
while read -r _dev mnt _type opts _rest; do
	if [ "$mnt" = / ]; then
		case "$opts" in rw,* | rw) ;; *) mount -o remount,rw / ;; esac
		break
	fi
done </proc/mounts
# resolv.conf when no initramfs wrote it (a no-op otherwise); before anything runs.
# banger's own scripts run in a subshell of this one rather than as programs: no
# exec of another shell (~45 ms each under emulation); their "exit" ends the subshell.
[ -r /sbin/banger-resolv ] && (. /sbin/banger-resolv)
if [ -s /etc/hostname ]; then
	read -r name </etc/hostname && [ -n "$name" ] && echo "$name" >/proc/sys/kernel/hostname
fi
# The kernel's ip= brings lo up with eth0; the initramfs's may not have.
read -r flags </sys/class/net/lo/flags
[ $((flags & 1)) = 1 ] || ip link set lo up

# The work disk on /root (banger.work=<device> on the command line, /dev/vdb by
# default): its own script, which banger-workdisk.service runs under systemd.
(. /sbin/banger-workdisk)

# The QEMU guest agent, when the image has it and the VM has its virtio-serial port.
# There is no udev to make /dev/virtio-ports/NAME: make the link from the port's name.
for port in /sys/class/virtio-ports/*; do
	[ -x /usr/sbin/qemu-ga ] || break
	[ -e "$port" ] || break # no port at all: the pattern itself
	name=
	read -r name <"$port/name" 2>/dev/null
	[ "$name" = org.qemu.guest_agent.0 ] || continue
	mkdir -p /dev/virtio-ports /run/qemu-ga
	ln -sf "../${port##*/}" /dev/virtio-ports/org.qemu.guest_agent.0
	log "starting the guest agent at $(uptime_s)s"
	/usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run/qemu-ga &
done
# On vsock instead when the VMM gave no such port but a vsock device (Firecracker);
# the script does nothing otherwise.
if [ -x /sbin/banger-agent-vsock ]; then
	/sbin/banger-agent-vsock &
fi

# sshd's privilege separation directory, /run/sshd, is made by the mount -a above
# (X-mount.mkdir): a mkdir here would be one more program run.
#
# sshd flags, each measured on the first login of a cold boot under emulation
# (docs/SECURITY.md, "Guest hardening"):
# -r: no re-exec of sshd for every connection (it loads sshd and its ~20
#   libraries again, ~0.2 s under emulation). The cost: connections are served by
#   forks of one process, so they share its address-space layout instead of each
#   getting a fresh one. Acceptable for a disposable guest whose sshd only the
#   host's bridge reaches; OpenSSH 9.8+ (sshd-session) ignores the flag.
# -o UsePAM=no: no PAM stack per login (pam_env, pam_limits, pam_loginuid,
#   pam_motd, ... ~0.2 s): sshd checks the account itself, as it does on images
#   built without PAM. /etc/environment and limits.conf are not applied to logins
#   under the fast init (systemd guests keep the image's own sshd configuration).
#   Except where root's password is locked with "!" (Fedora-style images): sshd
#   without PAM refuses a locked account outright, keys included; PAM lets keys in.
sshd_use_pam() {
	use_pam=no
	[ -r "$1" ] || return 0
	while IFS=: read -r _user _pass _rest; do
		[ "$_user" = root ] || continue
		case "$_pass" in "!"*) use_pam=yes ;; esac
		return 0
	done <"$1"
}
sshd_use_pam /etc/shadow
#
# sshd is a child, not exec'd: PID 1 must stay a shell that reaps orphans
# (every "wait" reaps any child) and that can run the poweroff trap.
while :; do
	log "starting sshd at $(uptime_s)s"
	/usr/sbin/sshd -D -e -r -o UsePAM="$use_pam" &
	sshd_pid=$!
	while kill -0 "$sshd_pid" 2>/dev/null; do
		wait "$sshd_pid"
	done
	log "sshd exited; restarting it in 1s"
	sleep 1
done
