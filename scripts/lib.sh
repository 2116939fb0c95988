# Shared by scripts/run and scripts/test: installs the Debian packages the
# gateway needs when they are missing. Sourced, not run.

# Packages to build the gateway and the blog example.
MIZAN_BUILD_PACKAGES="build-essential cmake pkg-config libevent-dev libjansson-dev libssl-dev
  libhiredis-dev libpcre2-dev libsqlite3-dev zlib1g-dev"
# Extra packages for the test suite.
MIZAN_TEST_PACKAGES="libcriterion-dev redis-server redis-tools json-schema-test-suite python3-jwt python3-yaml openssl
  haproxy nginx systemd prometheus curl wrk gnuplot-nox util-linux clang libclang-rt-14-dev"

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

# Repository root, whatever the caller's working directory.
MIZAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
