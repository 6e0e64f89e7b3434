#!/usr/bin/env bash
# The scaling check on a lent GPU machine (no network there): install the carried wheels (.whl/) and wrk
# (.devbin/), print what runs, then `python3 -m bench.scaling`. Results and this log go to $OUT.
#
#   bash scripts/device_check.sh [bench.scaling flags...]
#
# .whl/ holds the cp312 wheels of the server's dependencies that the machine lacks; .devbin/ holds Debian's wrk
# with its LuaJIT and OpenSSL libraries behind a wrapper that sets LD_LIBRARY_PATH for wrk alone.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$repo/bench/results}
site=${DEVICE_SITE:-/tmp/modelapi-site}
mkdir -p "$out"

main() {
    cd "$repo"
    echo "== install carried wheels into $site"
    ls .whl/*.whl >/dev/null
    ls .devbin/wrk .devbin/wrk.bin >/dev/null
    rm -rf "$site"
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    else
        echo "no pip: unpacking the wheels directly"
        python3 - "$site" .whl/*.whl <<'PY'
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
PY
    fi
    export PYTHONPATH="$site:$repo/src:$repo"
    export PATH="$repo/.devbin:$PATH"
    export PYTHONUNBUFFERED=1

    echo "== machine"
    uname -srm
    grep -m1 'model name' /proc/cpuinfo || true
    echo "CPUs: $(nproc) usable; $(taskset -p $$)"
    lscpu 2>/dev/null | grep -E '^(Thread|Core|Socket|NUMA node)' || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>/dev/null \
        || echo "nvidia-smi: not available"
    echo "== versions"
    python3 --version
    python3 - <<'PY'
import importlib
names = ["torch", "numpy", "scipy", "sklearn", "pandas", "pyarrow", "uvloop", "anyio", "httpx",
         "starlette", "uvicorn", "httptools", "pydantic", "pydantic_core", "pydantic_settings", "orjson",
         "skops", "sqlalchemy", "multipart"]
for name in names:
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:
        print(f"{name:18} MISSING: {exc}")
        continue
    print(f"{name:18} {getattr(mod, '__version__', '?'):12} {getattr(mod, '__file__', '')}")
try:
    import torch
    print("torch CUDA:", torch.version.cuda, "available:", torch.cuda.is_available())
except ImportError:
    pass
PY
    wrk -v 2>&1 | head -n1 || true
    python3 -m modelapi --version
    python3 -c "import modelapi.server, modelapi.cli, bench.scaling"

    echo "== python3 -m bench.scaling --out $out $*"
    python3 -m bench.scaling --out "$out" "$@"
}

main "$@" 2>&1 | tee "$out/device_check.log"
exit "${PIPESTATUS[0]}"
