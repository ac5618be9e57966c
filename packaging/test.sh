#!/usr/bin/env bash
# Tests the packages that packaging/build.sh left in dist/. What CI runs:
#
#   packaging/build.sh && packaging/test.sh
#
# Needs root on a Debian machine: it installs its tools with apt-get
# (lintian, rpm, systemd for systemd-analyze, man-db), then inspects the .deb
# and the .rpm, runs lintian and systemd-analyze, and installs, upgrades and
# purges the .deb on this machine. It refuses to run where hipconnect is
# already installed or /var/lib/hipconnect exists, and on exit puts back what
# it changed (package, state directory, the hipconnect user if it made it).
#
# Prints PASS or FAIL per check and ends with the line "N passed, M failed";
# exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0
pass() { echo "PASS: $1"; passed=$((passed + 1)); }
fail() {
	echo "FAIL: $1"
	[[ -z ${2:-} ]] || sed 's/^/      /' <<<"$2"
	failed=$((failed + 1))
}
# check NAME COMMAND...: passes if COMMAND exits 0; shows its output if not.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(tail -n 15 <<<"$out")"; fi
}
# same NAME GOT WANT
same() {
	if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1" "got:  $2"$'\n'"want: $3"; fi
}
# has NAME TEXT PATTERN...: TEXT matches every (extended) regular expression.
has() {
	local name=$1 text=$2 p missing=""
	shift 2
	for p; do grep -Eq -- "$p" <<<"$text" || missing+="missing /$p/"$'\n'; done
	if [[ -z $missing ]]; then pass "$name"; else fail "$name" "${missing%$'\n'}"; fi
}
summary() {
	echo "$passed passed, $failed failed"
	[[ $failed -eq 0 ]]
}
abort() { # a precondition failed: nothing else can be tested
	fail "$1" "${2:-}"
	summary
	exit 1
}

start=$SECONDS
[[ $(id -u) -eq 0 ]] || abort "running as root" "test.sh installs packages: run it as root"

# --- tools --------------------------------------------------------------------
missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v rpm >/dev/null || missing+=(rpm)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v man >/dev/null || missing+=(man-db)
if ((${#missing[@]})); then
	echo "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/hipconnect-test-apt.log 2>&1 ||
		abort "installing ${missing[*]} with apt-get" "$(tail -n 20 /tmp/hipconnect-test-apt.log)"
	rm -f /tmp/hipconnect-test-apt.log
fi
tools_done=$SECONDS

# --- the artifacts --------------------------------------------------------------
shopt -s nullglob
debs=(dist/hipconnect_*_amd64.deb)
rpms=(dist/hipconnect-*.x86_64.rpm)
shopt -u nullglob
[[ ${#debs[@]} -eq 1 && ${#rpms[@]} -eq 1 ]] ||
	abort "exactly one .deb and one .rpm in dist/" "found: ${debs[*]:-no deb} ${rpms[*]:-no rpm}; run packaging/build.sh first"
deb=${debs[0]} rpm=${rpms[0]}
debversion=$(dpkg-deb -f "$deb" Version)
version=${debversion%-*} # what `hipconnect version` prints
echo "testing $deb and $rpm (version $version)"

tmp=$(mktemp -d)
user_existed=no group_existed=no
getent passwd hipconnect >/dev/null && user_existed=yes
getent group hipconnect >/dev/null && group_existed=yes
cleanup() {
	if dpkg -s hipconnect >/dev/null 2>&1; then
		dpkg --purge hipconnect >/dev/null 2>&1 || true
	fi
	rm -rf /var/lib/hipconnect "$tmp"
	[[ $user_existed == yes ]] || userdel hipconnect 2>/dev/null || true
	[[ $group_existed == yes ]] || groupdel hipconnect 2>/dev/null || true
}

# --- the .deb, statically ----------------------------------------------------------
info=$(dpkg-deb -f "$deb")
has "deb control fields" "$info" \
	'^Package: hipconnect$' "^Version: $version-1\$" '^Architecture: amd64$' '^Section: net$' \
	'^Priority: optional$' '^Maintainer: .+ <.+@.+>$' '^Homepage: https://' '^Description: .+'
if grep -Eq '^(Pre-)?Depends:' <<<"$info"; then fail "deb has no dependencies (static binary)" "$info"; else pass "deb has no dependencies (static binary)"; fi

# "mode owner/group path" for every entry of the data archive
listing=$(dpkg-deb -c "$deb" | awk '{print $1, $2, $6}')
has "deb files, modes and owners" "$listing" \
	'^-rwxr-xr-x root/root \./usr/bin/hipconnect$' \
	'^-rw-r--r-- root/root \./usr/lib/systemd/system/hipconnect\.service$' \
	'^-rw-r--r-- root/root \./usr/lib/sysusers\.d/hipconnect\.conf$' \
	'^drwxr-x--- root/hipconnect \./etc/hipconnect/$' \
	'^-rw-r----- root/hipconnect \./etc/hipconnect/hipconnect\.yaml$' \
	'^drwx------ hipconnect/hipconnect \./var/lib/hipconnect/$' \
	'^-rw-r--r-- root/root \./usr/share/man/man8/hipconnect\.8\.gz$' \
	'^-rw-r--r-- \S+ \./usr/share/doc/hipconnect/changelog\.Debian\.gz$' \
	'^-rw-r--r-- root/root \./usr/share/doc/hipconnect/copyright$' \
	'^-rw-r--r-- root/root \./usr/share/doc/hipconnect/THIRD-PARTY-LICENSES$' \
	'^-rw-r--r-- root/root \./usr/share/doc/hipconnect/operations\.md$' \
	'^-rw-r--r-- root/root \./usr/share/doc/hipconnect/connectivity\.md$' \
	'^-rw-r--r-- root/root \./usr/share/doc/hipconnect/install-into-hipchat\.md$' \
	'^-rw-r--r-- root/root \./usr/share/lintian/overrides/hipconnect$'
same "deb conffiles" "$(dpkg-deb -I "$deb" conffiles)" "/etc/hipconnect/hipconnect.yaml"

mkdir -p "$tmp/deb"
dpkg-deb -x "$deb" "$tmp/deb/root" && dpkg-deb -e "$deb" "$tmp/deb/control"
check "packaged unit is systemd/hipconnect.service" \
	cmp "$tmp/deb/root/usr/lib/systemd/system/hipconnect.service" systemd/hipconnect.service
check "packaged config is packaging/hipconnect.yaml" \
	cmp "$tmp/deb/root/etc/hipconnect/hipconnect.yaml" packaging/hipconnect.yaml
sysusers=$(grep -v '^#' "$tmp/deb/root/usr/lib/sysusers.d/hipconnect.conf")
has "sysusers.d entry" "$sysusers" '^u hipconnect - ".+" /var/lib/hipconnect$'
check "preinst applies the sysusers.d line" grep -qF "'$sysusers'" "$tmp/deb/control/preinst"
for s in preinst postinst prerm postrm; do
	check "deb $s is POSIX sh with set -e" sh -c "head -1 '$tmp/deb/control/$s' | grep -qx '#!/bin/sh' &&
		grep -qx 'set -e' '$tmp/deb/control/$s' && sh -n '$tmp/deb/control/$s'"
done
has "deb postinst: enable on first install, try-restart on upgrade, only with systemd running" \
	"$(cat "$tmp/deb/control/postinst")" 'deb-systemd-helper --quiet was-enabled' 'deb-systemd-helper enable' \
	'\[ -d /run/systemd/system \]' 'daemon-reload' 'try-restart' 'configure'
has "deb prerm: stop on remove only" "$(cat "$tmp/deb/control/prerm")" '"\$1" = remove' 'stop hipconnect\.service'
has "deb postrm: purge keeps /var/lib/hipconnect" "$(cat "$tmp/deb/control/postrm")" 'purge\)' 'kept /var/lib/hipconnect'
check "man page renders without warnings" \
	sh -c "out=\$(MANWIDTH=80 man --warnings -l '$tmp/deb/root/usr/share/man/man8/hipconnect.8.gz' 2>&1 >/dev/null); [ -z \"\$out\" ] || { echo \"\$out\"; exit 1; }"

# --- the .rpm, statically ----------------------------------------------------------
rinfo=$(rpm -qpi "$rpm" 2>/dev/null)
has "rpm header" "$rinfo" '^Name +: hipconnect$' "^Version +: $version\$" '^Release +: 1$' \
	'^Architecture: x86_64$' '^License +: Apache-2\.0$' '^URL +: https://'
rfiles=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}/%{FILEGROUPNAME} %{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null)
has "rpm files, modes and owners" "$rfiles" \
	'^-rwxr-xr-x root/root /usr/bin/hipconnect $' \
	'^-rw-r--r-- root/root /usr/lib/systemd/system/hipconnect\.service $' \
	'^-rw-r--r-- root/root /usr/lib/sysusers\.d/hipconnect\.conf $' \
	'^drwxr-x--- root/hipconnect /etc/hipconnect $' \
	'^-rw-r----- root/hipconnect /etc/hipconnect/hipconnect\.yaml cn$' \
	'^drwx------ hipconnect/hipconnect /var/lib/hipconnect $' \
	'^-rw-r--r-- root/root /usr/share/man/man8/hipconnect\.8\.gz $' \
	'^drwxr-xr-x root/root /usr/share/doc/hipconnect $' \
	'^-rw-r--r-- root/root /usr/share/doc/hipconnect/copyright $'
if grep -q lintian <<<"$rfiles"; then fail "rpm has no lintian overrides" "$rfiles"; else pass "rpm has no lintian overrides"; fi
same "rpm has no dependencies" "$(rpm -qpR "$rpm" 2>/dev/null | grep -v '^rpmlib(')" ""
has "rpm scriptlets" "$(rpm -qp --scripts "$rpm" 2>/dev/null)" \
	'^preinstall scriptlet' 'systemd-sysusers --replace=/usr/lib/sysusers\.d/hipconnect\.conf' \
	'^postinstall scriptlet' 'systemctl --no-reload enable hipconnect\.service' \
	'^preuninstall scriptlet' 'systemctl stop hipconnect\.service' \
	'^postuninstall scriptlet' 'systemctl try-restart hipconnect\.service'
has "rpm changelog" "$(rpm -qp --changelog "$rpm" 2>/dev/null)" "^\* .+ - $version-1\$"

# The rpm scriptlets with each value of $1, against a stub systemctl that
# records its arguments (this machine has no running systemd either).
mkdir -p "$tmp/stub"
printf '#!/bin/sh\necho "systemctl $*" >>"%s/systemctl.log"\n' "$tmp" >"$tmp/stub/systemctl"
chmod +x "$tmp/stub/systemctl"
rpmscript() { # TAG ARG: run the rpm's scriptlet TAG (POSTIN, PREUN, POSTUN) with $1 = ARG
	rpm -qp --qf "%{$1}" "$rpm" 2>/dev/null >"$tmp/$1.sh"
	: >"$tmp/systemctl.log"
	PATH=$tmp/stub:$PATH sh "$tmp/$1.sh" "$2" >"$tmp/$1.out" 2>&1 || return 1
	cat "$tmp/systemctl.log"
}

# --- lintian and systemd-analyze --------------------------------------------------
lintian --pedantic --fail-on error "$deb" >"$tmp/lintian.out" 2>&1
lint_rc=$?
lint=$(grep -v '^running with root privileges' "$tmp/lintian.out")
if [[ $lint_rc -eq 0 ]]; then
	pass "lintian: no errors ($(grep -c '^W:' <<<"$lint") warnings, $(grep -c '^[IPX]:' <<<"$lint") other tags)"
	[[ -z $lint ]] || sed 's/^/      /' <<<"$lint"
else
	fail "lintian: no errors" "$lint"
fi
sec=$(systemd-analyze security --offline=true --threshold=20 systemd/hipconnect.service 2>&1)
sec_rc=$?
score=$(sed -n 's/.*Overall exposure level for hipconnect.service: \([0-9.]*\).*/\1/p' <<<"$sec")
if [[ $sec_rc -eq 0 && -n $score ]] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
	pass "systemd-analyze security: exposure $score (at most 2.0)"
else
	fail "systemd-analyze security: exposure ${score:-unknown} (at most 2.0)" "$(grep -E '✗|Overall' <<<"$sec")"
fi

# --- install on this machine ------------------------------------------------------
if dpkg -s hipconnect >/dev/null 2>&1 || [[ -e /var/lib/hipconnect ]]; then
	abort "clean machine" "hipconnect is installed or /var/lib/hipconnect exists: test.sh would touch real data"
fi
trap cleanup EXIT

check "dpkg -i (first install)" dpkg -i "$deb"
pw=$(getent passwd hipconnect)
has "system user hipconnect" "$pw" '^hipconnect:x:[0-9]+:[0-9]+:[^:]*:/var/lib/hipconnect:(/usr)?/sbin/nologin$'
uid=$(cut -d: -f3 <<<"$pw")
if [[ -n $uid && $uid -lt 1000 ]]; then pass "hipconnect is a system uid ($uid)"; else fail "hipconnect is a system uid" "uid ${uid:-none}"; fi
check "group hipconnect" getent group hipconnect
same "config file mode and owner" "$(stat -c '%a %U:%G' /etc/hipconnect/hipconnect.yaml 2>&1)" "640 root:hipconnect"
same "config directory mode and owner" "$(stat -c '%a %U:%G' /etc/hipconnect 2>&1)" "750 root:hipconnect"
same "state directory mode and owner" "$(stat -c '%a %U:%G' /var/lib/hipconnect 2>&1)" "700 hipconnect:hipconnect"
same "binary mode" "$(stat -c '%a %U:%G' /usr/bin/hipconnect 2>&1)" "755 root:root"
has "hipconnect version prints the version" "$(/usr/bin/hipconnect version 2>&1)" "(^| )${version//+/\\+}\$"
check "enabled on first install" test -L /etc/systemd/system/multi-user.target.wants/hipconnect.service
verify=$(systemd-analyze verify /usr/lib/systemd/system/hipconnect.service 2>&1)
if [[ $? -eq 0 && -z $verify ]]; then pass "systemd-analyze verify: clean"; else fail "systemd-analyze verify: clean" "$verify"; fi
check "man hipconnect finds the page" sh -c 'man -w hipconnect | grep -q "/usr/share/man/man8/hipconnect.8.gz"'
check "the packaged config loads (hipconnect descriptor)" \
	/usr/bin/hipconnect descriptor --config /etc/hipconnect/hipconnect.yaml

# A small valid configuration: plain HTTP, store in the temp dir, nothing to resolve.
mkdir -p "$tmp/check"
cat >"$tmp/check/hipconnect.yaml" <<EOF
server:
  base_url: http://127.0.0.1:18080
  listen: "127.0.0.1:18080"
  ops_listen: "127.0.0.1:19464"
tls:
  mode: "off"
storage:
  path: $tmp/check/hipconnect.db
hipchat:
  allowed_hosts: ["127.0.0.1"]
commands:
  - name: echo
    kind: echo
EOF
check "hipconnect check on a valid config exits 0" \
	timeout 60 /usr/bin/hipconnect check --config "$tmp/check/hipconnect.yaml"
printf 'server:\n  no_such_key: 1\n' >"$tmp/check/bad.yaml"
check "hipconnect check on an invalid config exits non-zero" \
	sh -c "! timeout 60 /usr/bin/hipconnect check --config '$tmp/check/bad.yaml'"

# The rpm scriptlets, now that the user and directories exist.
out=$(rpmscript POSTIN 1)
has "rpm %post 1: enables, does not start" "$out" '^systemctl --no-reload enable hipconnect\.service$'
same "rpm %post 2 (upgrade): no systemctl call without systemd" "$(rpmscript POSTIN 2)" ""
has "rpm %preun 0: disables" "$(rpmscript PREUN 0)" '^systemctl --no-reload disable hipconnect\.service$'
same "rpm %preun 1 (upgrade): nothing" "$(rpmscript PREUN 1)" ""
same "rpm %postun 1 (upgrade): no systemctl call without systemd" "$(rpmscript POSTUN 1)" ""
rpmscript POSTUN 0 >/dev/null
has "rpm %postun 0: says the data is kept" "$(cat "$tmp/POSTUN.out")" 'kept /var/lib/hipconnect'
# put back what the deb set up (%preun disabled the unit through the stub only)
check "still enabled after the rpm scriptlets" test -L /etc/systemd/system/multi-user.target.wants/hipconnect.service

# --- upgrade ----------------------------------------------------------------------
echo "# edited by packaging/test.sh" >>/etc/hipconnect/hipconnect.yaml
config_sum=$(sha256sum </etc/hipconnect/hipconnect.yaml)
echo "not really a bbolt file" >/var/lib/hipconnect/hipconnect.db
chown hipconnect:hipconnect /var/lib/hipconnect/hipconnect.db
chmod 0600 /var/lib/hipconnect/hipconnect.db
store_sum=$(sha256sum </var/lib/hipconnect/hipconnect.db)

# The same contents as a higher version, from the files build.sh staged.
newversion="$version+upgradetest"
nfpm=$(go env GOPATH 2>/dev/null)/bin/nfpm
mkdir -p "$tmp/upgrade"
if VERSION=$newversion MAINTAINER=$(dpkg-deb -f "$deb" Maintainer) \
	"$nfpm" package --config packaging/nfpm.yaml --packager deb --target "$tmp/upgrade/" >"$tmp/upgrade/log" 2>&1; then
	pass "build a .deb with a higher version ($newversion)"
else
	fail "build a .deb with a higher version ($newversion)" "$(cat "$tmp/upgrade/log")"
fi
check "dpkg -i (upgrade)" sh -c "dpkg -i '$tmp/upgrade/'*.deb </dev/null"
same "upgraded version" "$(dpkg-query -W -f '${Version}' hipconnect 2>&1)" "$newversion-1"
same "edited config kept on upgrade" "$(sha256sum </etc/hipconnect/hipconnect.yaml)" "$config_sum"
same "config mode and owner kept on upgrade" "$(stat -c '%a %U:%G' /etc/hipconnect/hipconnect.yaml 2>&1)" "640 root:hipconnect"
check "no .dpkg-dist/.dpkg-new left (config unchanged in the package)" \
	sh -c '! ls /etc/hipconnect/*.dpkg-* 2>/dev/null | grep -q .'
same "store kept on upgrade" "$(sha256sum </var/lib/hipconnect/hipconnect.db)" "$store_sum"
same "state directory still 0700 hipconnect" "$(stat -c '%a %U:%G' /var/lib/hipconnect 2>&1)" "700 hipconnect:hipconnect"
check "still enabled after upgrade" test -L /etc/systemd/system/multi-user.target.wants/hipconnect.service

# --- purge ------------------------------------------------------------------------
purge=$(dpkg --purge hipconnect 2>&1)
if [[ $? -eq 0 ]]; then pass "dpkg --purge"; else fail "dpkg --purge" "$purge"; fi
has "purge says the data is kept" "$purge" 'kept /var/lib/hipconnect'
check "conffile removed on purge" test ! -e /etc/hipconnect/hipconnect.yaml
check "/etc/hipconnect removed on purge" test ! -e /etc/hipconnect
check "binary and unit removed" sh -c 'test ! -e /usr/bin/hipconnect && test ! -e /usr/lib/systemd/system/hipconnect.service'
check "unit no longer enabled" test ! -L /etc/systemd/system/multi-user.target.wants/hipconnect.service
same "store kept on purge" "$(sha256sum </var/lib/hipconnect/hipconnect.db 2>&1)" "$store_sum"
check "user kept on purge (it owns the kept data)" getent passwd hipconnect

echo "took $((SECONDS - start)) s ($((SECONDS - tools_done)) s after installing tools)"
summary
