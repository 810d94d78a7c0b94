#!/bin/sh
# banger-power-button: the ACPI power button (QEMU's system_powerdown, the driver's
# graceful stop) powers a systemd guest off, as systemd-logind does on a distro install.
# banger's images run no udev (see images/leanboot.py) and logind finds buttons only
# through udev's database, so this reads the button's input events itself and, on a
# press of KEY_POWER, starts poweroff.target as logind's HandlePowerKey=poweroff does.
# Started after sshd; does nothing where the guest has no "Power Button" input device.
#
# POSIX sh only: it runs under dash in Debian images and busybox sh elsewhere.

# (Both overridable only so the host's tests can run this against made-up files.)
SYS=${BANGER_SYSFS:-/sys}
DEV=${BANGER_DEV:-/dev}

# watch DEVICE: read struct input_event records (24 bytes with a 64-bit kernel: the time
# in 16, then type u16, code u16, value s32), one per dd, until KEY_POWER is pressed.
watch() {
	exec 3<"$1" || return 1
	while :; do
		# shellcheck disable=SC2046 # one word per field is the point
		set -- $(dd bs=24 count=1 status=none <&3 | od -An -v -tu2)
		[ "$#" -eq 12 ] || return 1 # end of file or a short read: not an input device
		# EV_KEY (1), KEY_POWER (116), pressed (1); the value's high half is ${12}.
		if [ "$9" = 1 ] && [ "${10}" = 116 ] && [ "${11}" = 1 ]; then
			echo "banger-power-button: power button pressed; powering off" >/dev/kmsg 2>/dev/null
			exec systemctl start --no-block --job-mode=replace-irreversibly poweroff.target
		fi
	done
}

found=
for name in "$SYS"/class/input/event*/device/name; do
	what=
	read -r what <"$name" 2>/dev/null
	[ "$what" = "Power Button" ] || continue
	event=${name%/device/name}
	watch "$DEV/input/${event##*/}" &
	found=1
done
[ -n "$found" ] || exit 0
wait
