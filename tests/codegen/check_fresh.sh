#!/bin/sh
# Regenerates the blog's TypeScript client with the built mizand into a
# temporary file and fails, printing the difference, when the checked-in
# examples/blog/web/blog-client.ts is stale (a schema, a description or the
# generator changed without the file being regenerated).
#
# Usage: check_fresh.sh MIZAND SOURCE_DIR
# Regenerate with (from the source dir, after a build):
#   build/mizand codegen --config examples/blog/mizan.json --lang ts \
#       --import @mizan/client --out examples/blog/web/blog-client.ts
set -eu
mizand=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Loading the blog module opens (and seeds) its database: keep it out of the tree.
MIZAN_BLOG_DB="$tmp/blog.db" "$mizand" codegen --config "$src/examples/blog/mizan.json" --lang ts \
    --import @mizan/client --out "$tmp/blog-client.ts" 2>"$tmp/stderr" || {
    cat "$tmp/stderr" >&2
    echo "check_fresh: mizand codegen failed" >&2
    exit 1
}
if ! diff -u "$src/examples/blog/web/blog-client.ts" "$tmp/blog-client.ts"; then
    echo "check_fresh: examples/blog/web/blog-client.ts is stale; regenerate it with:" >&2
    echo "  build/mizand codegen --config examples/blog/mizan.json --lang ts --import @mizan/client --out examples/blog/web/blog-client.ts" >&2
    exit 1
fi
echo "check_fresh: examples/blog/web/blog-client.ts is up to date"
