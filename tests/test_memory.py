"""Memory, measured in a fresh process per backend: repeated fits do not grow the resident
set, and an MNIST fit needs at most one more dataset's worth of memory on top of the
float32 dataset itself (so data plus fit stay within 2x the dataset plus the model)."""

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("ignore")
from fastmlp import FastMLP, load_mnist

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
backend = sys.argv[1]
rng = np.random.default_rng(0)
X = rng.random((600, 40)).astype(np.float32)
y = rng.integers(0, 5, 600)
rss = []
for i in range(60):
    clf = FastMLP(hidden_layer_sizes=(32,), max_iter=2, random_state=i, backend=backend)
    clf.fit(X, y).predict(X)
    rss.append(status("VmRSS"))
(Xm, ym), _ = load_mnist()
FastMLP(max_iter=1, backend=backend).fit(Xm[:500], ym[:500])
base = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) from here
        f.write("5")
    resettable = True
except OSError:
    resettable = False
clf = FastMLP(max_iter=1, batch_size=64, random_state=0, backend=backend).fit(Xm, ym)
print(json.dumps({"rss_after_10": rss[9], "rss_after_60": rss[59], "base": base,
                  "peak": status("VmHWM"), "resettable": resettable,
                  "dataset": Xm.nbytes, "model": clf._params.nbytes}))
"""


@pytest.mark.reference_exhaustive
def test_memory(backend_name):
    out = subprocess.run([sys.executable, "-c", SCRIPT, backend_name], capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    mib = 2**20
    growth = m["rss_after_60"] - m["rss_after_10"]
    # 50 more fits: growth within noise (a leak of one small model per fit would be
    # 50 x 7 KB of parameters plus buffers; a leaked MNIST-sized buffer, far more)
    assert growth < 16 * mib, f"resident set grew {growth / mib:.1f} MiB over 50 fits"
    if not m["resettable"]:
        pytest.skip("this kernel does not let a process reset its peak resident set")
    extra = m["peak"] - m["base"]
    assert extra <= m["dataset"] + 4 * m["model"], (
        f"an MNIST fit needed {extra / mib:.0f} MiB beyond the {m['dataset'] / mib:.0f} MiB "
        "dataset already in memory")
