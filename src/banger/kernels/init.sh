#!/bin/busybox sh
# banger initramfs /init: load the virtio and ext4 modules, apply the kernel
# command line's ip= (the Debian kernel has no CONFIG_IP_PNP), mount the root
# disk, write the guest's hostname and resolv.conf into it, and switch_root.
#
# Contract (docs/ARCHITECTURE.md, "Guest boot contract"):
#   root=<dev> rootfstype=<fs> rootflags=<opts> ro|rw init=<path>
#   ip=<client>:<server>:<gw>:<prefix-or-netmask>:<hostname>:<dev>:<autoconf>:<dns0>
#
# Failures that leave the guest unusable print one "banger-initramfs: ..."
# line on the console and power the machine off: banger reads the console log
# to explain the failure, and a shell on a serial console nobody watches would
# only turn a clear error into a boot timeout.
#
# Everything is in functions so the tests can source this file under the
# host's busybox and call the parsing functions; main only runs as PID 1.

PREFIX="banger-initramfs"
NEWROOT=/newroot

# A note for the kernel log (shown on the console at the default loglevel).
note() {
	echo "$PREFIX: $*" >/dev/kmsg 2>/dev/null || echo "$PREFIX: $*"
}

# A fatal error: on the console for certain (even with "quiet"), then off.
die() {
	echo "$PREFIX: $*"
	echo "$PREFIX: $*" >/dev/kmsg 2>/dev/null
	sync
	poweroff -f
	# poweroff should not return; if it does, make the kernel stop the
	# machine (sysrq o), and as a last resort let PID 1 exit: with panic=-1
	# the kernel reboots, which qemu -no-reboot / firecracker turn into exit.
	echo o >/proc/sysrq-trigger 2>/dev/null
	sleep 5
	exit 1
}

# netmask (dotted quad) or prefix length -> prefix length; empty -> 24
to_prefix() {
	case "$1" in
	"") echo 24 ;;
	*.*.*.*)
		_bits=0
		_old_ifs=$IFS
		IFS=.
		for _octet in $1; do
			case "$_octet" in
			255) _bits=$((_bits + 8)) ;;
			254) _bits=$((_bits + 7)) ;;
			252) _bits=$((_bits + 6)) ;;
			248) _bits=$((_bits + 5)) ;;
			240) _bits=$((_bits + 4)) ;;
			224) _bits=$((_bits + 3)) ;;
			192) _bits=$((_bits + 2)) ;;
			128) _bits=$((_bits + 1)) ;;
			esac
		done
		IFS=$_old_ifs
		echo "$_bits"
		;;
	*) echo "$1" ;;
	esac
}

# Split an ip= value into ip_addr ip_gw ip_prefix ip_hostname ip_dev ip_dns.
# ip=off/none/dhcp (no colon) configures nothing: banger always passes a
# static address, and there is no DHCP server on its bridges.
parse_ip() {
	ip_addr= ip_gw= ip_prefix= ip_hostname= ip_dev= ip_dns=
	case "$1" in *:*) ;; *) return 0 ;; esac
	_old_ifs=$IFS
	IFS=:
	# shellcheck disable=SC2086 # splitting on ':' is the point
	set -- $1
	IFS=$_old_ifs
	ip_addr=$1 ip_gw=$3 ip_hostname=$5 ip_dev=${6:-eth0} ip_dns=$8
	ip_prefix=$(to_prefix "$4")
}

# Parse a kernel command line into the variables main uses.
parse_cmdline() {
	root=/dev/vda rootfstype=ext4 rootflags= rootmode=rw init=/sbin/init ip=
	set -f # a cmdline word like "a*" must not glob
	for arg in $1; do
		case "$arg" in
		root=*) root=${arg#root=} ;;
		rootfstype=*) rootfstype=${arg#rootfstype=} ;;
		rootflags=*) rootflags=${arg#rootflags=} ;;
		init=*) init=${arg#init=} ;;
		ip=*) ip=${arg#ip=} ;;
		ro) rootmode=ro ;;
		rw) rootmode=rw ;;
		esac
	done
	set +f
	parse_ip "$ip"
	mountopts=$rootmode${rootflags:+,$rootflags}
}

load_modules() {
	[ -f /lib/modules/load-order ] || return 0
	while read -r _mod; do
		[ -n "$_mod" ] || continue
		# crc32c-intel fails on CPUs without SSE4.2 and that is fine:
		# crc32c_generic is loaded too. So report, never stop.
		_err=$(insmod "/lib/modules/$_mod.ko" 2>&1) || note "insmod $_mod failed: $_err"
	done </lib/modules/load-order
}

configure_network() {
	if [ -n "$ip_hostname" ]; then hostname "$ip_hostname"; fi
	[ -n "$ip_addr" ] || return 0
	ip link set lo up
	_i=0
	while [ ! -e "/sys/class/net/$ip_dev" ] && [ $_i -lt 20 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	if [ ! -e "/sys/class/net/$ip_dev" ]; then
		note "no network device $ip_dev: ip= not applied"
		return 0
	fi
	ip link set "$ip_dev" up || note "cannot bring up $ip_dev"
	ip addr add "$ip_addr/$ip_prefix" dev "$ip_dev" || note "cannot add $ip_addr/$ip_prefix to $ip_dev"
	if [ -n "$ip_gw" ]; then
		ip route add default via "$ip_gw" dev "$ip_dev" || note "cannot add default route via $ip_gw"
	fi
}

wait_for_root() {
	case "$root" in /dev/*) ;; *) return 0 ;; esac
	_i=0
	while [ ! -b "$root" ] && [ $_i -lt 50 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
}

# Follow a symlink chain inside the new root: an absolute target such as
# /lib/systemd/systemd must be looked up under $NEWROOT, not in the initramfs.
resolve_in_root() {
	_path=$NEWROOT$1
	_hops=0
	while [ -L "$_path" ] && [ $_hops -lt 20 ]; do
		_target=$(readlink "$_path")
		case "$_target" in
		/*) _path=$NEWROOT$_target ;;
		*) _path=${_path%/*}/$_target ;;
		esac
		_hops=$((_hops + 1))
	done
	echo "$_path"
}

# Identity for the guest, written into the root disk before it boots.
write_guest_identity() {
	if [ -n "$ip_hostname" ]; then
		echo "$ip_hostname" >"$NEWROOT/etc/hostname" || note "cannot write /etc/hostname"
	fi
	if [ -n "$ip_dns" ]; then
		# A symlink (typically to /run/systemd/resolve/stub-resolv.conf) would
		# be followed from the initramfs, not the new root: dangling at best.
		# Replace it with a plain file.
		if [ -L "$NEWROOT/etc/resolv.conf" ]; then rm -f "$NEWROOT/etc/resolv.conf"; fi
		echo "nameserver $ip_dns" >"$NEWROOT/etc/resolv.conf" || note "cannot write /etc/resolv.conf"
	fi
}

main() {
	/bin/busybox --install -s /bin
	export PATH=/bin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	note "start at $(cut -d' ' -f1 /proc/uptime)s"
	load_modules
	parse_cmdline "$(cat /proc/cmdline)"
	configure_network
	wait_for_root
	if ! _err=$(mount -t "$rootfstype" -o "$mountopts" "$root" "$NEWROOT" 2>&1); then
		die "cannot mount $root ($rootfstype, $mountopts): ${_err:-no such device}"
	fi
	_init=$(resolve_in_root "$init")
	if [ ! -f "$_init" ] || [ ! -x "$_init" ]; then
		umount "$NEWROOT"
		die "init $init not found in root filesystem ($root)"
	fi
	write_guest_identity
	note "switch_root to $init at $(cut -d' ' -f1 /proc/uptime)s"
	mount --move /dev "$NEWROOT/dev" 2>/dev/null || umount /dev
	umount /proc /sys
	exec switch_root "$NEWROOT" "$init"
}

# As PID 1 this is the initramfs init; sourced by a test it only defines
# the functions above.
if [ "$$" = 1 ]; then main; fi
