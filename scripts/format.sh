#!/usr/bin/env bash
# Formats grelay's C with clang-format (.clang-format), or with --check
# says which files do not follow it and fails.
#   scripts/format.sh          rewrite the files in place
#   scripts/format.sh --check  change nothing; exit 1 if a file differs
set -euo pipefail
cd "$(dirname "$0")/.."
cf=$(command -v clang-format-14 || command -v clang-format || true)
[ -n "$cf" ] || { echo "format.sh: clang-format is not installed (scripts/install-deps.sh --test)" >&2; exit 2; }
mapfile -t files < <(git ls-files --cached --others --exclude-standard 'src/*.c' 'include/grelay/*.h' 'tests/unit/*.c' 'tests/fuzz/*.c' 'tests/fuzz/*.h' \
  'bench/*.c' 'bench/*.h')
if [ "${1:-}" = "--check" ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! "$cf" "$f" | cmp -s - "$f"; then
      echo "format.sh: $f does not follow .clang-format (scripts/format.sh fixes it)" >&2
      bad=1
    fi
  done
  [ "$bad" = 0 ] && echo "format.sh: ${#files[@]} files follow .clang-format"
  exit "$bad"
fi
"$cf" -i "${files[@]}"
