#!/usr/bin/env bash
# Installs a folder's npm packages exactly as its package-lock.json says,
# and only when the lockfile changed since the last install.
# Usage: scripts/npm-install.sh DIR
set -euo pipefail
dir=$1
stamp="$dir/node_modules/.grelay-lock-sha256"
want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "npm ci in $dir"
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
echo "$want" > "$stamp"
