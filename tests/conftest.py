"""Suite-wide test setup: CPU only, offline, deterministic, quiet."""

import os
import warnings

import pytest
import torch

os.environ.setdefault("LINMIX_BACKEND", "torch")  # never probe CUDA kernels in CPU tests
# One intra-op thread for the whole session, set once: tiny test tensors gain nothing from threads, and with this
# torch build any torch.set_num_threads(n > 1) call breaks MKL's LU solve afterwards ("Pivots given to lu_solve must
# all be greater or equal to 1", seen through torchmetrics' SDR), so tests must never switch back to several threads.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
