#!/usr/bin/env bash
# Install everything the test suite needs, then run it. Extra arguments go to pytest.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k drn     # a subset
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: ngspice is the independent reference for the DC operating point;
# dataset-fashion-mnist gives the real Fashion-MNIST files the dataset tests read;
# chromium is the headless browser the monitor and report tests drive.
need_apt=()
command -v ngspice >/dev/null 2>&1 || need_apt+=(ngspice)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "warning: cannot install ${need_apt[*]} (not root, no sudo): tests that need them will skip" >&2
    fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
exec python3 -m pytest "$@"
