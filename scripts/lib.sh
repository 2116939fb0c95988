# Shared by scripts/run and scripts/test: installs the Debian packages the
# gateway needs when they are missing. Sourced, not run.

# Packages to build the gateway and the blog example.
MIZAN_BUILD_PACKAGES="build-essential cmake pkg-config libevent-dev libjansson-dev libssl-dev
  libhiredis-dev libpcre2-dev libsqlite3-dev zlib1g-dev"
# Extra packages for the test suite.
MIZAN_TEST_PACKAGES="libcriterion-dev redis-server redis-tools json-schema-test-suite python3-jwt python3-yaml openssl
  haproxy nginx systemd prometheus curl wrk gnuplot-nox util-linux clang libclang-rt-14-dev chromium"

# Runs a command as root (directly, or through sudo for a normal user).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "mizan: need root to install packages: $*" >&2
        return 1
    fi
}

# mizan_install PKG...: installs whichever of PKG are not installed yet.
mizan_install() {
    missing=""
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing="$missing $pkg"
        fi
    done
    [ -z "$missing" ] && return 0
    echo "mizan: installing$missing" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
}

# mizan_install_node: Node.js (18 or later) and npm, for the TypeScript
# client's tests and the blog page. A node already on PATH (a newer one
# from another source, with its own npm) is kept; otherwise Debian's
# nodejs, and Debian's npm when no npm came with node.
mizan_install_node() {
    command -v node >/dev/null 2>&1 || mizan_install nodejs
    command -v npm >/dev/null 2>&1 || mizan_install npm
    local major
    major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
    if [ "$major" -lt 18 ]; then
        echo "mizan: node $(node --version) is too old: the client needs Node.js 18 or later" >&2
        return 1
    fi
}

# Repository root, whatever the caller's working directory.
MIZAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
