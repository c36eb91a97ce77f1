#!/usr/bin/env bash
# apko_build.sh CONFIG TAG ARCHS OUT_DIR: `apko build`, then its OCI tarball
# unpacked into OUT_DIR as an image layout.
set -euo pipefail
config=$1 tag=$2 archs=$3 out=$4
command -v apko >/dev/null || {
  echo "apko_build: apko is not on PATH (it cannot be installed on Debian 12 from apt)" >&2
  exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
SOURCE_DATE_EPOCH=0 apko build --arch "$archs" "$config" "$tag" "$tmp/image.tar"
mkdir -p "$out"
tar -xf "$tmp/image.tar" -C "$out"
[ -f "$out/oci-layout" ] && [ -f "$out/index.json" ] || {
  echo "apko_build: apko's output is not an OCI image layout" >&2
  exit 1
}
