#!/usr/bin/env bash
# Prepares the TypeScript client for its tests: installs the locked
# devDependencies (npm ci from clients/typescript/package-lock.json), builds
# the package (dist/) and the blog page (examples/blog/web/dist/).
# Registered as the ctest fixture the client and browser tests require.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root/clients/typescript"
for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "client tests: $tool not found: install Node.js 18+ and npm (scripts/lib.sh mizan_install_node)" >&2
        exit 1
    }
done
echo "node $(node --version), npm $(npm --version)"
npm ci --no-audit --no-fund --loglevel=error
npm run --silent build
npm run --silent build:web
echo "client: built $(ls dist/*.js | wc -l) modules; blog page built"
