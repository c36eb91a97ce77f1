#!/usr/bin/env bash
# validate_test.sh [VALIDATOR CONFIG REQUIREMENTS]
# The validator accepts the config and rejects variants that break a
# documented requirement, carry a forbidden package or are malformed.
# Run by the //apko:validate build action and by tests/tests/bazel_apko.rs.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
v=${1:-$here/validate.py}
cfg=${2:-$here/apko.yaml}
req=${3:-$here/requirements.yaml}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect_failure() {  # NAME EXPECTED-MESSAGE (config on stdin)
  cat > "$tmp/$1.yaml"
  if python3 "$v" "$tmp/$1.yaml" "$req" 2> "$tmp/$1.err"; then
    echo "validate_test: $1: accepted, should have failed" >&2; exit 1
  fi
  grep -qF -- "$2" "$tmp/$1.err" || {
    echo "validate_test: $1: wrong complaint:" >&2; cat "$tmp/$1.err" >&2; exit 1; }
  echo "ok: $1 refused ($2)"
}

grep -v '^    - iptables$' "$cfg" | expect_failure no-iptables "requirement iptables unmet"
sed 's/^    - apparmor$/    - apparmor\n    - bash/' "$cfg" | expect_failure shell "package bash is forbidden"
sed 's/^    - apparmor$/    - apparmor\n    - curl/' "$cfg" | expect_failure unexplained "package curl answers no documented requirement"
sed 's/^archs:/arches:/' "$cfg" | expect_failure typo "unknown top-level key 'arches'"
sed 's|command: /init|command: /bin/sh|' "$cfg" | expect_failure entrypoint "PID 1 is /init"
sed 's|https://dl-cdn|http://dl-cdn|' "$cfg" | expect_failure plain-http "is not an https URL"
sed 's/^    - linux-lts$/    - Linux LTS/' "$cfg" | expect_failure bad-name "is not an apk package spec"

python3 "$v" "$cfg" "$req"
