#!/usr/bin/env bash
# Make the FuxiCTR 2.3.10 venv that benchmarks/ctr/fuxictr.py drives (a benchmark-only peer, never a linmix
# dependency). The venv reuses the project venv's packages (torch, numpy, pandas, scikit-learn, PyYAML, ...)
# through a .pth file instead of reinstalling torch, installs fuxictr without its dependencies, then only the
# ones the project venv lacks: polars < 2 (fuxictr 2.3.10 calls scan_csv(dtypes=...), removed in polars 2; the
# venv's own polars shadows the project's), ray[data] (its data pipeline) and h5py.
#
#   bash benchmarks/ctr/fuxictr_env.sh /tmp/fuxictr-venv [/path/to/project/.venv]
#   python benchmarks/ctr/fuxictr.py --fuxictr-python /tmp/fuxictr-venv/bin/python ...
#   rm -rf /tmp/fuxictr-venv            # when done (~470 MB)
set -euo pipefail
VENV=${1:?usage: fuxictr_env.sh VENV_DIR [PROJECT_VENV]}
PROJECT_VENV=${2:-$(cd "$(dirname "$0")/../.." && pwd)/.venv}
PY=$("$PROJECT_VENV/bin/python" -c 'import sys; print(f"python{sys.version_info.major}.{sys.version_info.minor}")')
SITE=$("$PROJECT_VENV/bin/python" -c 'import torch, pathlib; print(pathlib.Path(torch.__file__).parents[1])')
"$PROJECT_VENV/bin/python" -m venv "$VENV"     # the same Python version as the project venv
echo "$SITE" > "$VENV/lib/$PY/site-packages/zz_project.pth"
"$VENV/bin/pip" install -q --no-deps fuxictr==2.3.10
"$VENV/bin/pip" install -q "polars<2" "ray[data]" h5py
"$VENV/bin/python" -c 'import fuxictr, torch, polars, ray; print("fuxictr", fuxictr.__version__, "torch", torch.__version__, "polars", polars.__version__, "ray", ray.__version__)'
