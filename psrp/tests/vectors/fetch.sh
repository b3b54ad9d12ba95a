#!/bin/sh
# Fetches the recorded WinRM/PSRP exchanges with real Windows hosts that pypsrp keeps as test data
# (tests/tests_pypsrp/responses in its PyPI sdist; MIT licence, see README.md here), pinned by version
# and sha256, into a cache outside the repository, and prints the path of the responses directory.
#
#   psrp/tests/vectors/fetch.sh            # prints e.g. ~/.cache/pssession-operator/vectors/pypsrp-0.9.1/tests/tests_pypsrp/responses
#   PSRP_VECTORS_DIR=$(psrp/tests/vectors/fetch.sh) cargo test -p psrp --test wire_vectors
#
# Progress and errors go to stderr; stdout carries only the path.
set -eu

VERSION=0.9.1
SHA256=3ad41285739d5f8107dd8277ae00e86ee44153aae5e82fb578ac8048307e0d12
URL="https://files.pythonhosted.org/packages/e8/bb/e64c311746a4e6d0a5baea4da826a9d06ea997eed50d3209041722a99dc3/pypsrp-$VERSION.tar.gz"

CACHE="${PSRP_VECTORS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pssession-operator/vectors}"
TOP="pypsrp-$VERSION"
RESPONSES="$CACHE/$TOP/tests/tests_pypsrp/responses"
TARBALL="$CACHE/$TOP.tar.gz"

if [ -f "$CACHE/$TOP/.complete" ]; then
    echo "$RESPONSES"
    exit 0
fi

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

verified() {
    [ -f "$TARBALL" ] && [ "$(sha256_of "$TARBALL")" = "$SHA256" ]
}

mkdir -p "$CACHE"
if ! verified; then
    rm -f "$TARBALL" "$TARBALL.part"
    echo "fetch.sh: downloading $URL" >&2
    if command -v curl >/dev/null 2>&1 && curl -fsSL --retry 3 -o "$TARBALL.part" "$URL"; then
        mv "$TARBALL.part" "$TARBALL"
    else
        # The same file through pip's index configuration (mirrors, proxies).
        echo "fetch.sh: curl failed; trying pip download" >&2
        rm -f "$TARBALL.part"
        PIPDIR=$(mktemp -d "$CACHE/pip.XXXXXX")
        python3 -m pip download --quiet --no-deps --no-binary :all: \
            "pypsrp==$VERSION" -d "$PIPDIR" >&2 || true
        if [ -f "$PIPDIR/$TOP.tar.gz" ]; then
            mv "$PIPDIR/$TOP.tar.gz" "$TARBALL"
        fi
        rm -rf "$PIPDIR"
    fi
    if ! verified; then
        echo "fetch.sh: could not get $TOP.tar.gz with sha256 $SHA256" >&2
        rm -f "$TARBALL"
        exit 1
    fi
fi

TMP=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
tar -xzf "$TARBALL" -C "$TMP" "$TOP/tests/tests_pypsrp/responses" "$TOP/LICENSE"
rm -rf "${CACHE:?}/$TOP"
mv "$TMP/$TOP" "$CACHE/$TOP"
touch "$CACHE/$TOP/.complete"
echo "fetch.sh: extracted $(ls "$RESPONSES" | wc -l) files to $RESPONSES" >&2
echo "$RESPONSES"
