#!/usr/bin/env bash
# Installs what building and testing segsync needs on a fresh Debian machine
# that has only the Rust toolchain: libclang (bindgen, for the rocksdb
# crate), a C++ compiler (RocksDB itself), Segment's Python client (the
# Personas test), and Debian's Chromium with playwright-core from npm (the
# console's browser tests; no test tool ever downloads a browser of its own),
# and Debian's nats-server (the workers' tests start a real JetStream server).
# Idempotent and quiet when everything is there.
set -euo pipefail

missing=()
have_libclang() {
    # bindgen loads libclang at build time; any versioned libclang.so will do.
    ldconfig -p 2>/dev/null | grep -q 'libclang.*\.so' && dpkg -s libclang-dev >/dev/null 2>&1
}
have_libclang || missing+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install the Rust toolchain (rustup) first" >&2; exit 1; }
# `make test` runs rustfmt and clippy; a minimal rustup profile lacks them.
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$component" >&2
        else
            echo "error: cargo $component is missing and there is no rustup to add it" >&2
            exit 1
        fi
    fi
done

# Tests drive segsync with Segment's own Python client library and fuzz its
# API with schemathesis; both come from PyPI.
pip_install() {
    echo "installing $1 (PyPI) for the tests" >&2
    python3 -m pip install --quiet --disable-pip-version-check "$1" >&2 \
        || python3 -m pip install --quiet --break-system-packages "$1" >&2
}
if ! command -v python3 >/dev/null 2>&1; then
    missing+=(python3 python3-pip)
else
    python3 -c 'import segment.analytics' >/dev/null 2>&1 || pip_install segment-analytics-python
    command -v schemathesis >/dev/null 2>&1 || pip_install schemathesis
fi

install_console_driver() {
    # playwright-core only: it never downloads a browser (it is pointed at
    # /usr/bin/chromium). Versions pinned by tests/console/package-lock.json.
    local dir
    dir="$(cd "$(dirname "$0")/.." && pwd)/tests/console"
    if [ ! -d "$dir/node_modules/playwright-core" ]; then
        echo "installing playwright-core (npm) for the console's browser tests" >&2
        (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent >&2)
    fi
}

if [ ${#missing[@]} -eq 0 ]; then
    install_console_driver
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing system packages: ${missing[*]}" >&2
    echo "       install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages (${missing[*]}) and no apt-get to install them" >&2
    exit 1
fi
echo "installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
install_console_driver
