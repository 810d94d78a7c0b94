#!/bin/sh
# banger-resolv: /etc/resolv.conf and /etc/hostname from the kernel's ip=, for a
# guest booted without banger's initramfs (the microVM kernel of "banger kernel build").
#
# Such a kernel has CONFIG_IP_PNP: it applies the command line's
# ip=<addr>::<gw>:<mask>:<host>:eth0:off:<dns> itself, sets the hostname from it
# and lists the DNS server in /proc/net/pnp ("nameserver <dns>"), but nothing
# writes them into /etc/hostname and /etc/resolv.conf, which the initramfs does for
# a distro kernel. This writes the same bytes the initramfs writes ("<host>" and
# "nameserver <dns>" lines; a symlinked resolv.conf replaced by a plain file).
# Run by the fast init and by banger-resolv.service under systemd, before anything
# resolves names; exits 0, doing nothing, where the kernel has no /proc/net/pnp
# (Debian's kernel: its initramfs wrote both); each file is left alone when the
# kernel has no value for it (no dns0, no hostname) or it already holds it.
#
# POSIX sh only: it runs under dash in Debian images and busybox sh elsewhere, and
# builtins only where it can (every program started costs ~50 ms under emulation).

# (All overridable only so the host's tests can run this against made-up files.)
PNP=${BANGER_PNP:-/proc/net/pnp}
RESOLV=${BANGER_RESOLV:-/etc/resolv.conf}
KMSG=${BANGER_KMSG:-/dev/kmsg}
KERNEL_HOSTNAME=${BANGER_KERNEL_HOSTNAME:-/proc/sys/kernel/hostname}
HOSTNAME_FILE=${BANGER_HOSTNAME_FILE:-/etc/hostname}

[ -r "$PNP" ] || exit 0

# holds FILE TEXT: whether FILE (a plain file) is exactly TEXT; builtins only.
holds() {
	[ ! -L "$1" ] && [ -f "$1" ] || return 1
	_got= _line=
	while IFS= read -r _line; do
		_got="$_got$_line
"
	done <"$1" || return 1
	# A last line without its newline is read too, into _line.
	[ "$_got$_line" = "$2" ]
}

status=0

# /etc/hostname: the name the kernel took from ip= (systemd.hostname= says the same),
# so that what reads the file agrees with "hostname". "(none)" is the kernel's
# "never set" (an ip= without its hostname field).
host=
{ read -r host <"$KERNEL_HOSTNAME"; } 2>/dev/null
case "$host" in
"" | "(none)") ;;
*)
	if ! holds "$HOSTNAME_FILE" "$host
"; then
		if printf '%s\n' "$host" >"$HOSTNAME_FILE"; then
			echo "banger-resolv: hostname $host (the kernel's ip=) written to $HOSTNAME_FILE" 2>/dev/null >>"$KMSG"
		else
			echo "banger-resolv: cannot write $HOSTNAME_FILE" >&2
			status=1
		fi
	fi
	;;
esac

conf= servers=
while read -r key value _rest; do
	[ "$key" = nameserver ] || continue
	# The kernel prints dotted quads; anything else is not written into resolv.conf.
	case "$value" in "" | *[!0-9.]*) continue ;; esac
	conf="${conf}nameserver $value
"
	servers="$servers $value"
done <"$PNP"
[ -n "$conf" ] || exit "$status"
# Unchanged since the last boot (the root disk is kept across restarts): no write.
holds "$RESOLV" "$conf" && exit "$status"
# A symlink (to systemd-resolved's stub, say) would point at a file nothing serves.
if [ -L "$RESOLV" ]; then rm -f "$RESOLV"; fi
if printf '%s' "$conf" >"$RESOLV"; then
	echo "banger-resolv: nameserver$servers (the kernel's ip=) written to $RESOLV" 2>/dev/null >>"$KMSG"
	exit "$status"
fi
echo "banger-resolv: cannot write $RESOLV" >&2
exit 1
