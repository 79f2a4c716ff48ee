"""The batched engine's array operations (fairl.irl.batch's `ops`): NumpyOps on the CPU,
TorchOps on other devices; one interface, so the engine's code is the same on both."""

from __future__ import annotations

import numpy as np
import torch

GEMV_HEADS = 4  # numpy: up to this many heads, one matrix-vector product each (bench/fit.py)


class NumpyOps:
    """The engine's array operations on numpy arrays (CPU).

    The full products run on Dᵀ stored as its own C-contiguous (d, n) array (`columns`), not
    on D (n, d): OpenBLAS's matrix-vector products on that layout took 175-190 us against
    255-295 us at 9 243 x 384 (2 threads, AMD EPYC), a round of both 366 against 494 us, and
    4.2 against 6.2 ms at 20 000 x 768; its GEMMs 10-20 % less (32 and 96 heads). Gathered
    rows (S_t, a hinge's few active pairs) come from D, whose rows are contiguous: gathering
    Dᵀ's columns took 7x as long."""

    @staticmethod
    def columns(D):
        """Dᵀ (d, n), C-contiguous (the products' layout): D's cached copy for a reused D."""
        return np.ascontiguousarray(D.T)

    @staticmethod
    def margins(theta, DT, out=None):
        """Δ = Θ Dᵀ (H, b) for Θ (H, d), DT = Dᵀ (d, b). OpenBLAS runs a GEMM with one to a
        few rows far slower than as many matrix-vector products (AMD EPYC, 9 243 x 384, on
        D's layout: 0.92 ms for a one-row GEMM against 0.31 ms for D @ θ), so few heads go
        one product each."""
        if len(theta) > GEMV_HEADS:
            return np.matmul(theta, DT, out=out)
        out = np.empty((len(theta), DT.shape[1]), theta.dtype) if out is None else out
        for h in range(len(theta)):
            np.matmul(theta[h], DT, out=out[h])
        return out

    @staticmethod
    def gradient(G, DT, out):
        """G D (H, d) into `out` for G (H, b), DT = Dᵀ (d, b): per head up to GEMV_HEADS."""
        if len(G) > GEMV_HEADS:
            np.matmul(G, DT.T, out=out)
        else:
            for h in range(len(G)):
                np.matmul(DT, G[h], out=out[h])
        return out

    @staticmethod
    def row_gradient(G, rows, out):
        """G R (H, d) into `out` for G (H, k) and gathered rows R (k, d) of D."""
        if len(G) > GEMV_HEADS:
            np.matmul(G, rows, out=out)
        else:
            for h in range(len(G)):
                np.matmul(G[h], rows, out=out[h])
        return out

    @staticmethod
    def dense_share(heads: int) -> float:
        """From this share of a step's rows on, a failure head's S_t goes into the backward
        product as a dense row of G rather than by its gathered rows D[S_t] (AMD EPYC, 2
        threads, 9 243 x 384: a GEMM's extra row cost 70 us, gathering 5 % of the rows and
        their product 157 us; one more product Dᵀ g 600-800 us, 20 % of the rows 400 us and
        50 % 1 450 us)."""
        return 1 / 32 if heads > GEMV_HEADS else 1 / 4

    @staticmethod
    def sparse_share(heads: int) -> float:
        """Up to this share of a step's rows, the backward product runs on the rows a hinge
        head needs, gathered (fairl.irl.batch's _sparse_backward; AMD EPYC, 9 243 x 384: one
        head's gather and product of 3 % of the rows 69 us, 10 % 150-160 us, 20 % 310-360 us
        against 320-420 us for D^T g; 96 heads at one thread, 20 % 4.4 ms against 11.4 ms)."""
        return 0.1 if heads <= GEMV_HEADS else 0.3

    @staticmethod
    def searchsorted(sorted_values, values):
        return np.searchsorted(sorted_values, values)

    @staticmethod
    def tensor(values, like, dtype=None):
        return np.asarray(values, dtype=dtype or like.dtype)

    zeros_like, where, sqrt, exp, log = np.zeros_like, np.where, np.sqrt, np.exp, np.log
    vecdot = np.vecdot  # row-wise dot products: (H, b) . (H, b) -> (H,)

    @staticmethod
    def zeros(shape, like, dtype=None):
        return np.zeros(shape, dtype=dtype or like.dtype)

    @staticmethod
    def relu_(x):
        return np.maximum(x, 0, out=x)

    @staticmethod
    def rows(D, index, buffer):
        """(D[index], the buffer it is in): `buffer` (or None) is reused, grown when too small.
        A new array of this size (a few MB) is fresh pages every round, and evicts D from the
        cache (FA-IRL's S_t rows)."""
        if buffer is None or len(buffer) < len(index) or buffer.shape[1:] != D.shape[1:]:
            buffer = np.empty((len(index),) + D.shape[1:], D.dtype)
        # mode="clip" (the indices are valid): with "raise", numpy copies `out` once more
        return np.take(D, index, axis=0, out=buffer[:len(index)], mode="clip"), buffer

    @staticmethod
    def sign(x):
        return np.sign(x)

    @staticmethod
    def row_min(x):
        return x.min(1)

    @staticmethod
    def count_rows(mask) -> np.ndarray:
        # row by row: 1.2 us a row of 9 243 against 7.9 us for one row with axis=1 (measured)
        return np.array([np.count_nonzero(row) for row in mask], np.int64)

    @staticmethod
    def nonzero(row):
        return np.flatnonzero(row)

    @staticmethod
    def count(mask) -> int:
        return int(np.count_nonzero(mask))

    @staticmethod
    def concat(arrays):
        return np.concatenate(arrays)

    @staticmethod
    def segment_sums(values, lengths) -> np.ndarray:
        """Sums of consecutive runs of `values` of the given (positive) lengths."""
        return np.add.reduceat(values, np.concatenate([[0], np.cumsum(lengths)[:-1]]))

    @staticmethod
    def smallest(values, k: int):
        return np.argpartition(values, k - 1)[:k]

    @staticmethod
    def randperm(m: int, generator: torch.Generator, device):
        return torch.randperm(m, generator=generator).numpy()

    @staticmethod
    def index(values, device):
        return np.asarray(values, dtype=np.intp)

    @staticmethod
    def host(x) -> np.ndarray:
        return x

    @staticmethod
    def from_torch(tensor: torch.Tensor, device):
        return tensor.numpy()


class TorchOps:
    """The same operations on torch tensors (CUDA, or a test's CPU run of this path)."""

    @staticmethod
    def columns(D):
        return D.T  # a view: torch's products take the transposed operand as it is

    @staticmethod
    def margins(theta, DT, out=None):
        return torch.matmul(theta, DT, out=out)

    @staticmethod
    def gradient(G, DT, out):
        out[...] = G @ DT.T
        return out

    @staticmethod
    def row_gradient(G, rows, out):
        out[...] = G @ rows
        return out

    @staticmethod
    def dense_share(heads: int) -> float:
        return 0.0  # a GEMM's extra row costs less than gathering rows, at any S_t

    @staticmethod
    def sparse_share(heads: int) -> float:
        return 0.0  # not measured on a GPU: the dense product

    @staticmethod
    def searchsorted(sorted_values, values):
        return torch.searchsorted(sorted_values, values)

    @staticmethod
    def tensor(values, like, dtype=None):
        dtype = torch.bool if dtype is bool else dtype or like.dtype
        return torch.as_tensor(values, dtype=dtype, device=like.device)

    zeros_like, sqrt, exp, log = torch.zeros_like, torch.sqrt, torch.exp, torch.log

    @staticmethod
    def vecdot(a, b):
        return (a * b).sum(-1)

    @staticmethod
    def where(condition, a, b):
        return torch.where(condition, a, b)

    @staticmethod
    def zeros(shape, like, dtype=None):
        return torch.zeros(shape, dtype=dtype or like.dtype, device=like.device)

    @staticmethod
    def relu_(x):
        return x.clamp_min_(0)

    @staticmethod
    def rows(D, index, buffer):
        return D[index], None

    sign = torch.sign

    @staticmethod
    def row_min(x):
        return x.amin(1)

    @staticmethod
    def count_rows(mask) -> np.ndarray:
        return mask.sum(1).cpu().numpy()  # the one host read of a step: it sizes each S_t

    @staticmethod
    def nonzero(row):
        return row.nonzero().squeeze(1)

    @staticmethod
    def count(mask) -> int:
        return int(mask.sum())

    @staticmethod
    def concat(arrays):
        return torch.cat(arrays)

    @staticmethod
    def segment_sums(values, lengths) -> np.ndarray:
        counts = torch.as_tensor(lengths, device=values.device)
        ids = torch.arange(len(counts), device=values.device).repeat_interleave(counts)
        return values.new_zeros(len(counts)).index_add_(0, ids, values).cpu().numpy()

    @staticmethod
    def smallest(values, k: int):
        return values.topk(k, largest=False).indices

    @staticmethod
    def randperm(m: int, generator: torch.Generator, device):
        return torch.randperm(m, generator=generator).to(device)

    @staticmethod
    def index(values, device):
        return torch.as_tensor(values, dtype=torch.long, device=device)

    @staticmethod
    def host(x) -> np.ndarray:
        return x.cpu().numpy()

    @staticmethod
    def from_torch(tensor: torch.Tensor, device):
        return tensor.to(device)
