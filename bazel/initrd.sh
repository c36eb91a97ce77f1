#!/usr/bin/env bash
# initrd.sh EMBER MODULE_LIST ARGS...
# Runs `EMBER ARGS... --module <list>`, the list made from MODULE_LIST the
# way qemu/build-initrd makes it, so both build paths pass identical inputs.
set -euo pipefail
ember=$1 list=$2
shift 2
modules=$(grep -v '^#' "$list" | tr '\n' ',' | sed 's/,,*/,/g; s/^,//; s/,$//')
# ember prints a summary line; Bazel would show it (and sandbox chatter).
exec "$ember" "$@" --module "$modules" >/dev/null
