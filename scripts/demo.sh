#!/usr/bin/env bash
# The README's main job, on a fresh Debian 12 machine as root: install what is needed, build a
# small image locally, serve CRI with the runc backend, import the image, run a pod whose
# container prints a line, show the line from the CRI log and the pod's status, tear it all down.
# BACKEND=fake runs the same demo on the in-memory backend (no root, no runc needed).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CRIADAPT_VENV:-.venv}
BACKEND=${BACKEND:-runc}

if [ "$BACKEND" = runc ]; then
    packages="runc conmon containernetworking-plugins busybox-static iptables"
    missing=$(for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
        echo "== installing:" $missing
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet -e . -e backends/criadapt-runc

work=$(mktemp -d /tmp/criadapt-demo.XXXXXX)
sock="$work/criadapt.sock"
mkdir -p "$work/cni"
cat > "$work/cni/10-demo.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "criadapt-demo", "plugins": [
  {"type": "bridge", "bridge": "criadapt-demo0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.89.250.0/24"}]],
            "dataDir": "$work/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
cat > "$work/criadapt.toml" <<TOML
backend = "$BACKEND"
listen = "unix://$sock"
root = "$work/root"
state = "$work/state"
[cni]
conf_dir = "$work/cni"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
TOML

echo "== building a busybox image locally: $work/demo-image.tar"
"$VENV/bin/python" -c "
from pathlib import Path
from criadapt.testing.images import busybox_image, write_oci_layout
write_oci_layout([('localhost/criadapt/demo:1.0', busybox_image())], Path('$work/demo-image.tar'))
"
if [ "$BACKEND" = runc ]; then
    echo "== criadapt images import"
    "$VENV/bin/criadapt" images import "$work/demo-image.tar" --config "$work/criadapt.toml"
fi

echo "== criadapt serve --backend=$BACKEND"
"$VENV/bin/criadapt" serve --config "$work/criadapt.toml" 2>"$work/serve.log" &
server=$!
cleanup() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    ip link delete criadapt-demo0 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
"$VENV/bin/python" scripts/demo_pod.py "unix://$sock" "$work/logs" "$BACKEND"
echo "== done; tearing down"
