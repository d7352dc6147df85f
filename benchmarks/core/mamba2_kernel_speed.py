"""Mamba2 mixer forward+backward time on CUDA: the pure-PyTorch chunked SSD path vs mamba-ssm's Triton kernel.

    python benchmarks/core/mamba2_kernel_speed.py          # needs CUDA; the kernel column needs `pip install -e .[cuda]`

Prints one Markdown table: B=4, d_model=256, d_state=64, fp32, L = 1k / 4k / 16k. The numerics of the two paths are
checked by ``pytest -m gpu tests/core/test_gpu_parity.py``.
"""

import time

import torch

from linmix.shared import Mamba2, kernel_available


def bench(m, x, reps=5):
    for _ in range(2):
        m(x).square().mean().backward()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        m(x).square().mean().backward()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def main():
    torch.manual_seed(0)
    has_kernel = kernel_available()
    print("| L | torch path ms | kernel ms | torch / kernel |\n|---|---|---|---|")
    for L in (1024, 4096, 16384):
        x = torch.randn(4, L, 256, device="cuda", requires_grad=True)
        ref = Mamba2(256, d_state=64, backend="torch").cuda()
        t_ref = bench(ref, x)
        t_ker = float("nan")
        if has_kernel:
            ker = Mamba2(256, d_state=64, backend="kernel").cuda()
            ker.load_state_dict(ref.state_dict())
            t_ker = bench(ker, x)
        print(f"| {L} | {t_ref:.2f} | {t_ker:.2f} | {t_ref / t_ker:.2f} |", flush=True)


if __name__ == "__main__":
    main()
