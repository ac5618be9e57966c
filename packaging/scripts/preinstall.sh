#!/bin/sh
# hipconnect: runs before the package's files are unpacked, for both formats
# (deb preinst: "install" or "upgrade" OLD-VERSION; rpm %pre: 1 on install,
# 2 on upgrade). It only makes sure the system user and group exist, which is
# the same in every case, so the arguments do not matter.
#
# The user must exist before unpacking: /var/lib/hipconnect is owned by it
# and /etc/hipconnect/hipconnect.yaml by its group, and dpkg and rpm fall back
# to root for an owner they cannot resolve.
set -e

# The same line as /usr/lib/sysusers.d/hipconnect.conf (a test checks it).
sysusers_line='u hipconnect - "hipconnect HipChat Connect add-on" /var/lib/hipconnect'

if command -v systemd-sysusers >/dev/null 2>&1; then
	# Works without a running systemd (containers, chroots, image builds).
	printf '%s\n' "$sysusers_line" |
		systemd-sysusers --replace=/usr/lib/sysusers.d/hipconnect.conf -
else
	# No systemd at all: the shadow tools, with what sysusers would have done.
	if ! getent group hipconnect >/dev/null; then
		groupadd --system hipconnect
	fi
	if ! getent passwd hipconnect >/dev/null; then
		nologin=/usr/sbin/nologin
		[ -x "$nologin" ] || nologin=/sbin/nologin
		useradd --system --gid hipconnect --no-create-home \
			--home-dir /var/lib/hipconnect --shell "$nologin" \
			--comment "hipconnect HipChat Connect add-on" hipconnect
	fi
fi

if ! getent passwd hipconnect >/dev/null || ! getent group hipconnect >/dev/null; then
	echo "hipconnect: could not create the system user and group 'hipconnect'" >&2
	exit 1
fi
exit 0
