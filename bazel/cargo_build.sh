#!/usr/bin/env bash
# cargo_build.sh MANIFEST PACKAGE BINARY OUT [BUILD_SCRIPT]
# Runs in a Bazel action (local, unsandboxed): builds one workspace package
# with cargo in the real source tree and copies the binary to OUT. With
# BUILD_SCRIPT (e.g. scripts/build-init), that script builds it instead:
# the same steps the Cargo path runs, post-processing included.
set -euo pipefail
manifest=$1 package=$2 binary=$3 out=$4 script=${5:-}
# Bazel's execroot holds symlinks into the source tree: follow one back.
root=$(dirname "$(readlink -f "$manifest")")
target=${CARGO_TARGET_DIR:-$root/target}
execroot=$PWD
# Prebuilt mode: binaries already built by cargo elsewhere (a test's own
# profile directory, a CI cache) are taken as they are.
if [ -n "${EMBER_PREBUILT_DIR:-}" ]; then
  cp "$EMBER_PREBUILT_DIR/$binary" "$execroot/$out"
  exit 0
fi
if ! command -v cargo >/dev/null; then
  echo "cargo_build: cargo is not on PATH (run Bazel from a shell with the Rust toolchain)" >&2
  exit 1
fi
if [ -n "$script" ]; then
  # Its own output is for people; Bazel shows an action's output, so quiet.
  (cd "$root" && CARGO_NET_OFFLINE=true bash "$(readlink -f "$execroot/$script")" >/dev/null)
else
  (cd "$root" && CARGO_TARGET_DIR="$target" cargo build --release --offline -q -p "$package")
fi
cp "$target/release/$binary" "$execroot/$out"
