#!/usr/bin/env bash
# Builds hipconnect's .deb and .rpm into dist/. The one build command:
#
#   packaging/build.sh
#
# It computes the version from `git describe --tags --always --dirty`
# (override with VERSION=...), builds the static binary dist/hipconnect,
# stages the man page, docs and changelog in dist/pkg/, installs nfpm at the
# pinned version if it is missing, and runs it for both formats. It prints
# the paths of the packages. Needs: go, git, gzip.
#
# Environment: VERSION (package version), MAINTAINER (Name <email>),
# SOURCE_DATE_EPOCH (timestamps; default: the last commit's time).
set -euo pipefail

NFPM_VERSION=v2.45.2 # newer versions do not resolve through our module proxy
cd "$(dirname "$0")/.."
DIST=dist
PKG=$DIST/pkg

# --- version ----------------------------------------------------------------
# git describe gives TAG[-N-gSHA][-dirty] or SHA[-dirty]; dpkg and rpm want
# no "-" and a leading digit. "~" sorts before and "+" after what precedes
# it in both, so:
#   v1.2.0 -> 1.2.0          v1.2.0-3-gabc1234 -> 1.2.0+git3.abc1234
#   v1.3.0-rc1 -> 1.3.0~rc1  abc1234 (no tag) -> 0.0.0~git<commits>.abc1234
#   v1.2.0-dirty -> 1.2.0+dirty   abc1234-dirty -> 0.0.0~git<commits>.abc1234.dirty
package_version() {
	local d dirty="" tag n sha v
	d=$(git describe --tags --always --dirty 2>/dev/null) || { echo 0.0.0~nogit; return; }
	case $d in *-dirty) dirty=1 d=${d%-dirty} ;; esac
	if [[ $d =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		tag=${BASH_REMATCH[1]} n=${BASH_REMATCH[2]} sha=${BASH_REMATCH[3]}
	elif [[ $d =~ ^[0-9a-f]{7,}$ ]] && ! git rev-parse -q --verify "refs/tags/$d" >/dev/null; then
		tag="" n=$(git rev-list --count HEAD) sha=$d
	else
		tag=$d n="" sha=""
	fi
	if [[ -z $tag ]]; then
		v="0.0.0~git$n.$sha"
	else
		v=${tag#v}
		v=${v/-/\~}              # 1.3.0-rc1 -> 1.3.0~rc1
		v=${v//[^A-Za-z0-9.+~]/.}
		[[ -n $n ]] && v="$v+git$n.$sha"
	fi
	if [[ -n $dirty ]]; then
		[[ -n $n ]] && v="$v.dirty" || v="$v+dirty"
	fi
	echo "$v"
}
VERSION=${VERSION:-$(package_version)}
if ! [[ $VERSION =~ ^[0-9][A-Za-z0-9.+~]*$ ]]; then
	echo "build.sh: version '$VERSION' is not a valid deb/rpm version" >&2
	exit 1
fi
export VERSION
export MAINTAINER=${MAINTAINER:-hipconnect maintainers <packaging@hipconnect.invalid>}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

# --- binary -------------------------------------------------------------------
rm -rf "$PKG" "$DIST"/hipconnect_*.deb "$DIST"/hipconnect-*.rpm
mkdir -p "$PKG/man" "$PKG/doc"
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o "$DIST/hipconnect" ./cmd/hipconnect

# --- staged files ----------------------------------------------------------
gzip -9n <docs/hipconnect.8 >"$PKG/man/hipconnect.8.gz"
[[ ! -f README.md ]] || cp README.md "$PKG/doc/"
cp docs/*.md "$PKG/doc/"
cp packaging/copyright "$PKG/doc/copyright"

# Licence texts of every module compiled into the binary, Go's included.
{
	echo "Licences of the Go modules compiled into /usr/bin/hipconnect."
	echo "The binary was built with Go $(go env GOVERSION | sed 's/^go//')."
	go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' \
		./cmd/hipconnect | sort -u | sed "1i go $(go env GOVERSION) $(go env GOROOT)" |
		while read -r path version dir; do
			printf '\n%s\n== %s %s\n%s\n' "$(printf '=%.0s' {1..72})" "$path" "$version" "$(printf '=%.0s' {1..72})"
			found=0
			for f in "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* "$dir"/NOTICE*; do
				[[ -f $f ]] || continue
				printf '\n-- %s\n\n' "${f##*/}"
				cat "$f"
				found=1
			done
			[[ $found = 1 ]] || echo "(no licence file in the module; see its source)"
		done
} >"$PKG/doc/THIRD-PARTY-LICENSES"

# One changelog entry per build (the project's history is in git).
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$PKG/changelog.yml" <<YAML
- semver: "$VERSION-1"
  date: $date
  packager: "$MAINTAINER"
  deb:
    urgency: medium
    distributions: [stable]
  changes:
    - note: "hipconnect $VERSION, built from commit $commit."
YAML

# --- nfpm --------------------------------------------------------------------
NFPM=$(go env GOPATH)/bin/nfpm
if ! go version -m "$NFPM" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/goreleaser/nfpm/v2[[:space:]]+$NFPM_VERSION[[:space:]]"; then
	echo "installing nfpm $NFPM_VERSION" >&2
	(cd / && GOFLAGS= CGO_ENABLED=0 GOOS= GOARCH= GOBIN=$(go env GOPATH)/bin \
		go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION")
fi
for p in deb rpm; do
	"$NFPM" package --config packaging/nfpm.yaml --packager "$p" --target "$DIST/" >&2
done

ls -1 "$DIST"/hipconnect_"$VERSION"-1_amd64.deb "$DIST"/hipconnect-"$VERSION"-1.x86_64.rpm
