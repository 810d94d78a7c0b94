#!/bin/sh
# banger-resolv: /etc/resolv.conf from the DNS server the kernel took from ip=, for a
# guest booted without banger's initramfs (the microVM kernel of "banger kernel build").
#
# Such a kernel has CONFIG_IP_PNP: it applies the command line's
# ip=<addr>::<gw>:<mask>:<host>:eth0:off:<dns> itself and lists the DNS server in
# /proc/net/pnp ("nameserver <dns>"), but nothing writes it into /etc/resolv.conf,
# which the initramfs does for a distro kernel. This writes the same bytes the
# initramfs writes ("nameserver <dns>" lines, a symlink replaced by a plain file).
# Run by the fast init and by banger-resolv.service under systemd, before anything
# resolves names; exits 0, doing nothing, where the kernel has no /proc/net/pnp
# (Debian's kernel: its initramfs wrote resolv.conf) or it names no server.
#
# POSIX sh only: it runs under dash in Debian images and busybox sh elsewhere.

# (All overridable only so the host's tests can run this against made-up files.)
PNP=${BANGER_PNP:-/proc/net/pnp}
RESOLV=${BANGER_RESOLV:-/etc/resolv.conf}
KMSG=${BANGER_KMSG:-/dev/kmsg}

[ -r "$PNP" ] || exit 0
conf= servers=
while read -r key value _rest; do
	[ "$key" = nameserver ] || continue
	# The kernel prints dotted quads; anything else is not written into resolv.conf.
	case "$value" in "" | *[!0-9.]*) continue ;; esac
	conf="${conf}nameserver $value
"
	servers="$servers $value"
done <"$PNP"
[ -n "$conf" ] || exit 0
# Unchanged since the last boot (the root disk is kept across restarts): no write.
if [ ! -L "$RESOLV" ] && [ -f "$RESOLV" ] && [ "$(cat "$RESOLV")
" = "$conf" ]; then
	exit 0
fi
# A symlink (to systemd-resolved's stub, say) would point at a file nothing serves.
if [ -L "$RESOLV" ]; then rm -f "$RESOLV"; fi
if printf '%s' "$conf" >"$RESOLV"; then
	echo "banger-resolv: nameserver$servers (the kernel's ip=) written to $RESOLV" 2>/dev/null >"$KMSG"
	exit 0
fi
echo "banger-resolv: cannot write $RESOLV" >&2
exit 1
