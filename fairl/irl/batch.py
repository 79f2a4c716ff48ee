"""Many reward heads in one pass: fairl.irl.fit's FA-IRL loop for K heads on one D at once.

Heads (any mix of seeds and FitConfigs of one world) share the difference matrix D (n, d):
per round one product gives every head's margins, Δ (K, n) = Θ Dᵀ with Θ's rows θ_D + θ_F,
and one more every head's base-path gradient, G D with G (K, n) the loss gradients ∂L/∂Δ
(plus, where the failure loss moves θ_D, its sampled entries). Each head keeps its own
schedules, generator (init, S_t draws, minibatch order: the draws of an unbatched fit),
failure sets, optimiser state and divergence check; the failure head's gradient comes from
its sampled rows alone (D[S_t]ᵀ g_S: a large S_t as a dense row of G in the backward product,
a small one by its gathered rows; ops.dense_share). Where the hinge heads need few rows (a
hinge has no gradient past its margin: most pairs of a separable world after a few rounds),
the backward product runs on those rows alone (ops.sparse_share). A head that ends (its
last round, a divergence, an error from its monitor) leaves the pass; the others go on.
Minibatch heads (batch_size set) draw their own row order, so each runs in a pass of its
own. fit() is the K = 1 case.

Arrays: numpy on the CPU (OpenBLAS's products; AMD EPYC, 2 cores: a matrix-vector product
at 20 000 x 768 took 0.95 ms against torch's MKL 3.3 ms, and at 32 heads numpy's GEMMs per
head were 0.2-0.25x of one head's pair of products), torch on other devices (fairl.irl.ops's
`NumpyOps` and `TorchOps`: the same code). Up to GEMV_HEADS heads, numpy takes one
matrix-vector product per head instead of a GEMM: OpenBLAS ran a GEMM of 2-4 rows 2-3x
slower than as many matrix-vector products (9 243 x 384, 2 threads). A product of K heads
rounds differently from K products of one (other kernels and blocking), so a head's
numbers in a batch are those of its unbatched fit within float32 rounding
(tests/irl/test_batch.py), not bit for bit. The products run on Dᵀ stored C-contiguous,
the layout OpenBLAS multiplies fastest here (ops.NumpyOps); rows are gathered from D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fairl.devices import resolve_device
from fairl.irl.config import FitConfig
from fairl.irl.failures import ensemble_failure_mask, failure_budget
from fairl.irl.losses import hinge_pair_terms, hinge_terms, logistic_pair_terms, logistic_terms
from fairl.irl.ops import NumpyOps, TorchOps
from fairl.irl.optim import Optimiser
from fairl.irl.result import (
    FitDiverged,
    FitResult,
    Monitor,
    column_sums,
    difference_matrix,
    init_heads,
    transposed,
)
from fairl.irl.schedules import gamma_schedule, lambda_schedule, p_schedule


def fit_many(h_T: np.ndarray, h_NT: np.ndarray, configs: Sequence[FitConfig],
             gt_T: np.ndarray | None = None, gt_NT: np.ndarray | None = None,
             monitors: Sequence[Monitor | None] | None = None, ops=None
             ) -> list[FitResult | Exception]:
    """Fit one head per config on the same pairs; per head its FitResult, or the Exception
    that ended it (FitDiverged, or what its monitor raised, e.g. a pruned trial's).

    `ops`: NumpyOps or TorchOps; default numpy on the CPU, torch elsewhere (the configs'
    one device). Other exceptions (a stop signal) end every head.
    """
    configs = list(configs)
    monitors = list(monitors) if monitors is not None else [None] * len(configs)
    if not configs or len(monitors) != len(configs):
        raise ValueError("fit_many needs one config per head (and one monitor, or None, each)")
    devices = {c.device for c in configs}
    if len(devices) > 1:
        raise ValueError(f"the heads of one pass share a device, got {sorted(devices)}")
    diffs = difference_matrix(h_T, h_NT)
    n = len(diffs)
    gt_margins = None
    if any(c.failure_mode == "ground_truth" for c in configs):
        if gt_T is None or gt_NT is None:
            raise ValueError("failure_mode='ground_truth' needs gt_T and gt_NT (r* of both outputs)")
        gt_margins = np.asarray(gt_T, np.float32) - np.asarray(gt_NT, np.float32)
        if gt_margins.shape != (n,):
            raise ValueError(f"gt_T/gt_NT must have shape ({n},), got {gt_margins.shape}")
    device = devices.pop()
    # auto: CUDA when available; other names were checked by FitConfig's validator.
    device = torch.device(resolve_device("auto") if device == "auto" else device)
    ops = ops or (NumpyOps if device.type == "cpu" else TorchOps)
    results: list = [None] * len(configs)
    full = [i for i, c in enumerate(configs) if c.batch_size is None or c.batch_size >= n]
    passes = [full] * bool(full) + [[i] for i in range(len(configs)) if i not in full]
    for heads in passes:
        ended = _Pass(diffs, gt_margins, [configs[i] for i in heads],
                      [monitors[i] for i in heads], ops, device).run()
        for i, outcome in zip(heads, ended):
            results[i] = outcome
    return results


class _Pass:
    """One pass of heads that share every step's rows (all full-batch, or one minibatch head)."""

    def __init__(self, diffs: torch.Tensor, gt_margins, configs: list[FitConfig], monitors,
                 ops, device):
        # Max-margin heads first, then max-entropy (stable): each objective's rows one slice.
        self.order = sorted(range(len(configs)),
                            key=lambda i: configs[i].objective != "max_margin")
        self.configs = [configs[i] for i in self.order]
        self.monitors = [monitors[i] for i in self.order]
        self.ops, self.device = ops, device
        self.n, d = diffs.shape
        self.D = ops.from_torch(diffs, device)  # (n, d): its rows are gathered
        # Dᵀ (d, n) for the full products (ops.columns), kept with a reused D on the CPU
        self.DT = transposed(diffs) if issubclass(ops, NumpyOps) \
            else ops.columns(self.D)
        self.gt_positive = None if gt_margins is None else ops.from_torch(
            torch.from_numpy(gt_margins > 0), device)
        K = len(self.configs)
        self.generators = [torch.Generator().manual_seed(c.seed) for c in self.configs]
        weights, self.biases = zip(*(init_heads(d, 2 if c.dual_path else 1, g)
                                     for c, g in zip(self.configs, self.generators)))
        start = torch.zeros(K, 2, d)  # θ_D, θ_F of each head; θ_F stays 0 without the path
        for h, w in enumerate(weights):
            start[h, :len(w)] = w
        self.W = ops.from_torch(start, device)
        rounds = max(c.rounds for c in self.configs)
        self.schedule = np.full((rounds, K, 3), np.nan)  # γ_t, λ_t, p_t per round and head
        for h, c in enumerate(self.configs):
            self.schedule[:c.rounds, h] = [
                (gamma_schedule(t, c.rounds, c.gamma_start, c.gamma_end, c.gamma_shape),
                 lambda_schedule(t, c.lambda0, c.lambda_decay, c.lambda_fixed,
                                 c.rounds if c.lambda_decay_scaled else None),
                 p_schedule(t, c.rounds, c.p0, c.p_end)) for t in range(c.rounds)]
        # Δ < γ_t marks F_t; a head without failures gets -inf, so none
        self.thresholds = np.where([c.failure_mode == "none" for c in self.configs],
                                   -np.inf, self.schedule[..., 0])
        batch = self.configs[0].batch_size
        self.batch = None if batch is None or batch >= self.n else batch
        self.sizes = [self.n] if self.batch is None else [
            min(self.batch, self.n - i) for i in range(0, self.n, self.batch)]
        self.losses = np.zeros((rounds, len(self.sizes), K, 3), np.float32)  # base, fail, l2
        self.stats = np.zeros((rounds, K, 3))  # margin mean, min, accuracy
        self.counts = np.zeros((rounds, K, 2), np.int64)  # |F_t|, |S_t| summed over the round
        self.failing = any(c.failure_mode != "none" for c in self.configs)
        # rounds each pair spent in F_t, per head (by slot: rows never move); int32 adds
        # the round's mask faster than int64 (rounds <= 100 000)
        self.failure_counts = ops.zeros((K, self.n), self.W,
                                        torch.int32 if ops is TorchOps else np.int32)
        # Σ_i Δ_i = θ · Σ_i D_i: a full batch's margin sum in d products, not n
        self.column_sums = ops.from_torch(torch.from_numpy(column_sums(diffs)), device)
        ensemble = [c.failure_mode == "ensemble" for c in self.configs]
        self.ensemble = None
        if any(ensemble):
            masks = [ensemble_failure_mask(diffs, c) if e else torch.zeros(self.n, dtype=bool)
                     for c, e in zip(self.configs, ensemble)]
            self.ensemble = ops.from_torch(torch.stack(masks), device)
        self.live = np.arange(K)  # slots of the heads still in the pass
        self.row_buffer = None  # D[S_t]'s rows, reused round after round (ops.rows)
        self.support_buffer = None  # D[U]'s rows (_sparse_backward)
        self._constants()
        self.optimiser = Optimiser([c.optimizer for c in self.configs],
                                   [c.lr for c in self.configs], self.W, ops)
        self.ended: list = [None] * K

    def _constants(self) -> None:
        """Per-head constants of the live heads, as (H, 1) columns or host lists."""
        ops, cs = self.ops, [self.configs[h] for h in self.live]

        def column(values):
            return ops.tensor([[v] for v in values], self.W)

        self.max_margin = sum(c.objective == "max_margin" for c in cs)  # rows [0, this)
        self.M, self.tau = column([c.M for c in cs]), column([c.tau for c in cs])
        self.alpha = column([c.l2_fail if c.dual_path else 0.0 for c in cs])
        self.dual = any(c.dual_path for c in cs)  # else θ_F is 0 and stays so: no l2 term
        self.alpha2 = 2 * self.alpha if self.dual else None
        self.grad = ops.zeros_like(self.W)  # the step's gradient, reused round after round
        self.strict_values = np.array([c.M_fail if c.objective == "max_margin" else c.tau_fail
                                       for c in cs])
        self.all_live = len(cs) == len(self.configs)
        self.last_round = min(c.rounds for c in cs) - 1 if cs else 0  # no head ends before
        self.watched = any(self.monitors[h] is not None for h in self.live)
        self.to_base = [c.fail_grad_to_base or not c.dual_path for c in cs]
        self.none = [c.failure_mode == "none" for c in cs]
        self.ground_truth = np.array([i for i, c in enumerate(cs)
                                      if c.failure_mode == "ground_truth"], np.intp)
        self.ensemble_rows = np.array([i for i, c in enumerate(cs)
                                       if c.failure_mode == "ensemble"], np.intp)

    def run(self) -> list:
        """Every round of every head; per head (in the callers' order) a FitResult or error."""
        with np.errstate(all="ignore"):  # a diverging head ends by its loss check, not a warning
            return self._rounds()

    def _rounds(self) -> list:
        for t in range(len(self.schedule)):
            if not len(self.live):
                break
            blocks = [slice(None)]
            if self.batch is not None:  # a seeded shuffle into minibatches, per round
                order = self.ops.randperm(self.n, self.generators[self.live[0]], self.device)
                blocks = [order[i:i + self.batch] for i in range(0, self.n, self.batch)]
            for s, rows in enumerate(blocks):
                self._step(t, s, rows)
                if not len(self.live):
                    break
            if not len(self.live):
                break
            if t >= self.last_round or self.watched:
                self._after_round(t)
        return [self.ended[self.order.index(i)] for i in range(len(self.order))]

    def _step(self, t: int, s: int, rows) -> None:
        """One step on the pairs `rows` for every live head: losses, gradients, update."""
        ops, live, W = self.ops, self.live, self.W
        full = isinstance(rows, slice)
        D = self.D if full else self.D[rows]
        DT = self.DT if full else ops.columns(D)
        b = len(D)
        at = slice(None) if self.all_live else live  # the live heads' rows of per-head arrays
        lam, p = self.schedule[t, at, 1], self.schedule[t, at, 2]
        theta = W[:, 0] + W[:, 1]  # (H, d): both heads see Δ = D (θ_D + θ_F)
        margins = ops.margins(theta, DT)  # (H, b): the one forward product
        sums = theta @ self.column_sums if full else margins.sum(1)
        failures = None
        if self.failing:
            failures = margins < ops.tensor(self.thresholds[t, at][:, None], margins)
            if len(self.ground_truth):
                index = ops.index(self.ground_truth, self.device)
                failures[index] &= self.gt_positive[rows]
            if len(self.ensemble_rows):
                index = ops.index(self.ensemble_rows, self.device)
                slots = ops.index(live[self.ensemble_rows], self.device)
                failures[index] = self.ensemble[slots][:, rows]
            n_failures = ops.count_rows(failures)
        else:
            n_failures = np.zeros(len(live), np.int64)
        m, scale = self.max_margin, 1 / b  # ∂(mean)/∂loss_i, rounded as autograd rounds it
        if m == len(live):
            base, grads = hinge_terms(margins, self.M, scale, ops)  # ∂L/∂Δ (H, b)
        elif m == 0:
            base, grads = logistic_terms(margins, self.tau, scale, ops)
        else:
            base = ops.tensor(np.zeros(len(live)), margins)
            grads = ops.zeros_like(margins)
            base[:m], grads[:m] = hinge_terms(margins[:m], self.M[:m], scale, ops)
            base[m:], grads[m:] = logistic_terms(margins[m:], self.tau[m:], scale, ops)
        fail, n_sampled, sampled = self._failure_terms(margins, failures, n_failures, lam, p,
                                                       b, grads)
        grad = self.grad  # (H, 2, d), written whole below
        if self.dual:
            grad[:, 1] = self.alpha2 * W[:, 1]  # ∂(α‖θ_F‖²)/∂θ_F = 2α θ_F
            l2 = ops.host(self.alpha[:, 0] * ops.vecdot(W[:, 1], W[:, 1]))
        else:
            l2 = 0.0  # and grad[:, 1] stays 0
        if not self._sparse_backward(D, DT, grads, sampled, grad):
            self._backward(D, DT, grads, sampled, grad)
        self.optimiser.step(W, grad)
        # this step's (base, fail, l2) losses: a view into the history while no head has ended
        terms = self.losses[t, s] if self.all_live else np.empty((len(live), 3), np.float32)
        terms[:, 0], terms[:, 1], terms[:, 2] = ops.host(base), fail, l2
        self._record(t, s, rows, margins, sums, failures, n_failures, n_sampled, terms, lam)

    def _backward(self, D, DT, grads, sampled, grad) -> None:
        """grad[:, 0] = G D, the one backward product; the failure heads' D[S_t]ᵀ g_S added
        to grad[:, 1]: a large S_t as a dense row of G (zero off S_t), a small one by its
        gathered rows (ops.dense_share)."""
        ops, H = self.ops, len(grads)
        share = ops.dense_share(H) * len(D)
        dense = [item for item in sampled if len(item[1]) >= share]
        if dense:
            G = self._dense_block(grads, dense)
            out = ops.gradient(G, DT, ops.zeros((len(G), D.shape[1]), grads))
            grad[:, 0] = out[:H]
            grad[ops.index([h for h, _, _ in dense], self.device), 1] += out[H:]
        else:
            ops.gradient(grads, DT, grad[:, 0])
        for h, pairs, g in sampled:
            if len(pairs) < share:
                block, self.row_buffer = ops.rows(D, pairs, self.row_buffer)
                grad[h, 1] += g @ block

    def _sparse_backward(self, D, DT, grads, sampled, grad) -> bool:
        """The backward product over the rows some hinge head (or S_t) needs, if they are few
        (under ops.sparse_share of the step's rows); False (nothing done) otherwise.

        The hinge max(0, M - Δ) has no gradient on a pair past its margin, so its heads' rows
        of G are zero there: on a separable world most pairs after the first rounds (planted
        9 243 x 384: 3-10 % of the pairs active from round 10 on), on the default world none
        (60-100 % active). Those rows and every head's S_t are gathered once, U, and one small
        product G[:, U] D[U] gives the hinge heads' θ_D and all failure heads' θ_F gradients;
        max-entropy heads (no zeros) take theirs over all of D."""
        ops, m, H = self.ops, self.max_margin, len(grads)
        share = ops.sparse_share(H) if m else 0.0
        if not share:
            return False
        used = grads[0] != 0 if m == 1 else (grads[:m] != 0).any(0)
        for _, pairs, _ in sampled:
            used[pairs] = True
        if ops.count(used) > share * len(D):
            return False
        support = ops.nonzero(used)  # U, ascending
        block, self.support_buffer = ops.rows(D, support, self.support_buffer)
        G = ops.zeros((m + len(sampled), len(support)), grads)
        G[:m] = grads[:m, support]
        for row, (_, pairs, g) in enumerate(sampled, m):
            G[row, ops.searchsorted(support, pairs)] = g
        out = ops.row_gradient(G, block, ops.zeros((len(G), D.shape[1]), grads))
        grad[:m, 0] = out[:m]
        if m < H:
            ops.gradient(grads[m:], DT, grad[m:, 0])
        for row, (h, _, _) in enumerate(sampled, m):
            grad[h, 1] += out[row]
        return True

    def _dense_block(self, grads, dense):
        """[grads; one row per dense head with its λ_t ∂L_fail/∂Δ on S_t, zero elsewhere]."""
        H, b = grads.shape
        G = self.ops.zeros((H + len(dense), b), grads)
        G[:H] = grads
        for row, (_, pairs, g) in enumerate(dense, H):
            G[row, pairs] = g
        return G

    def _failure_terms(self, margins, failures, n_failures, lam, p, b: int, grads):
        """S_t per head, its loss (H,) and [(head, S_t, λ_t ∂L_fail/∂Δ)] for the failure heads;
        where the failure loss moves θ_D, its gradient also goes into the base `grads`.

        The failure loss of every head's S_t is one pass over their pairs side by side (each
        pair with its head's strict constant and weight λ_t / |S_t|), not one per head."""
        ops, fail = self.ops, np.zeros(len(self.live), np.float32)
        sizes = np.zeros(len(self.live), np.int64)  # |S_t| per head
        budgets = []  # (head, k, config) of the heads with a failure step this round
        for h, slot in enumerate(self.live):
            c = self.configs[slot]
            k = failure_budget(int(n_failures[h]), b, p[h], c.failure_budget) \
                if not self.none[h] else 0
            if k > 0 and lam[h] > 0:
                budgets.append((h, k, c))
        if not budgets:
            return fail, sizes, []
        flat = ops.nonzero(failures.reshape(-1))  # F_t of each head: h b + pair, row by row
        ends = np.cumsum(n_failures)
        chosen = []  # S_t of each head, as indices into margins.reshape(-1)
        for h, k, c in budgets:
            pairs = flat[ends[h] - n_failures[h]:ends[h]]
            if k < len(pairs):
                if c.failure_sampling == "random":
                    pairs = pairs[ops.randperm(len(pairs), self.generators[self.live[h]],
                                               self.device)[:k]]
                else:  # hardest: the lowest margins
                    pairs = pairs[ops.smallest(margins.reshape(-1)[pairs], k)]
            chosen.append(pairs)
        heads = np.array([h for h, _, _ in budgets], np.intp)
        lengths = np.array([len(pairs) for pairs in chosen], np.int64)
        sizes[heads] = lengths
        # The failure loss sees R = R_D + R_F: the same Δ; strict constants, weight λ_t.
        if len(budgets) == 1:  # one head's S_t: its constants as numbers (a single fit)
            (h, _, c), = budgets
            values = margins.reshape(-1)[chosen[0]]
            terms = hinge_pair_terms if c.objective == "max_margin" else logistic_pair_terms
            strict, weight = (ops.tensor(v, values) for v in (self.strict_values[h],
                                                                  lam[h] / lengths[0]))
            losses, g = terms(values, strict, weight, ops)  # float32, as the margins
            fail[h] = losses.sum() / lengths[0]
        else:
            values = margins.reshape(-1)[ops.concat(chosen)]
            each = self.strict_values[heads], lam[heads] / lengths  # per head: constant, weight
            strict, weight = (ops.tensor(np.repeat(v, lengths), values) for v in each)
            cut = int(lengths[:np.searchsorted(heads, self.max_margin)].sum())  # hinge first
            hinge = hinge_pair_terms(values[:cut], strict[:cut], weight[:cut], ops)
            logistic = logistic_pair_terms(values[cut:], strict[cut:], weight[cut:], ops)
            losses, g = (ops.concat(parts) for parts in zip(hinge, logistic))
            fail[heads] = ops.segment_sums(losses, lengths) / lengths  # each head's mean
        sampled, offset = [], 0
        for (h, _, c), flat_pairs in zip(budgets, chosen):
            pairs = flat_pairs - h * b
            g_h, offset = g[offset:offset + len(pairs)], offset + len(pairs)
            if self.to_base[h]:
                grads[h, pairs] += g_h
            if c.dual_path:
                sampled.append((h, pairs, g_h))
        return fail, sizes, sampled

    def _record(self, t: int, s: int, rows, margins, sums, failures, n_failures, n_sampled,
                terms, lam) -> None:
        """The step's history; heads whose loss is not finite end here (FitDiverged)."""
        ops, slots = self.ops, self.live
        if not self.all_live:  # else the step wrote its terms in place
            self.losses[t, s, slots] = terms
        at = slice(None) if self.all_live else slots
        self.counts[t, at, 0] += n_failures
        self.counts[t, at, 1] += n_sampled
        if failures is not None:
            if not isinstance(rows, slice):
                self.failure_counts[slots[0], rows] += failures[0]
            elif self.all_live:
                self.failure_counts += failures
            else:
                self.failure_counts[ops.index(slots, self.device)] += failures
        stats = self.stats[t, at]  # margin sum, min, number above 0 (means: _history)
        stats[:, 0] += ops.host(sums)
        low = ops.host(ops.row_min(margins))
        stats[:, 1] = low if s == 0 else np.minimum(stats[:, 1], low)
        stats[:, 2] += ops.count_rows(margins > 0)
        if not self.all_live:  # a copy, not a view
            self.stats[t, at] = stats
        totals = terms[:, 0] + np.float32(lam) * terms[:, 1] + terms[:, 2]
        if math.isfinite(totals.sum()):  # NaN or ±inf anywhere makes the sum so
            return
        for h in np.flatnonzero(~np.isfinite(totals)):
            c, (base, fail, l2) = self.configs[slots[h]], terms[h]
            self._end(slots[h], FitDiverged(
                f"loss is {totals[h]} at round {t} (base={base:.4g}, fail={fail:.4g}, "
                f"l2={l2:.4g}); try a smaller lr (now {c.lr})"))

    def _after_round(self, t: int) -> None:
        """Heads at their last round end with their result; monitors see the others. Heads
        that share a monitor (a trial's seeds) end together when it raises."""
        stopped = {}  # id(monitor) -> what it raised
        for slot in list(self.live):
            c, monitor = self.configs[slot], self.monitors[slot]
            if t + 1 == c.rounds:
                self._end(slot, self._result(slot, self._history(slot)))
            elif monitor is not None and (t + 1) % monitor.every == 0:
                try:
                    monitor(t, self._result(slot, []))
                except Exception as error:  # noqa: BLE001 (these heads' end, not the pass's)
                    stopped[id(monitor)] = error
        for slot in list(self.live):
            error = stopped.get(id(self.monitors[slot]))
            if error is not None:
                self._end(slot, error)

    def _end(self, slot: int, outcome) -> None:
        """Head `slot` leaves the pass with `outcome` (its FitResult or the error)."""
        self.ended[slot] = outcome
        keep = np.flatnonzero(self.live != slot)
        self.live = self.live[keep]
        index = self.ops.index(keep, self.device)
        self.W = self.W[index]
        self.optimiser.keep(index)
        self._constants()

    def _result(self, slot: int, history: list[dict]) -> FitResult:
        c, h = self.configs[slot], int(np.flatnonzero(self.live == slot)[0])
        weights, biases = self.ops.host(self.W[h]), self.biases[slot].numpy()
        counts = self.ops.host(self.failure_counts[slot]).astype(np.int64)
        return FitResult(theta_D=weights[0].copy(), b_D=float(biases[0]),
                         theta_F=weights[1].copy() if c.dual_path else None,
                         b_F=float(biases[1]) if c.dual_path else 0.0, config=c,
                         history=history, failure_counts=counts.copy())

    def _history(self, slot: int) -> list[dict]:
        """One record per round of head `slot`; the loss is its pairs' weighted step mean."""
        rounds = self.configs[slot].rounds
        schedule, losses = self.schedule[:rounds, slot], self.losses[:rounds, :, slot]
        base, fail, l2 = losses[..., 0], losses[..., 1], losses[..., 2]  # (rounds, steps)
        # L_t in float32, as the step summed it
        total = base + schedule[:, 1:2].astype(np.float32) * fail + l2
        shares = [size / self.n for size in self.sizes]  # each step's share of the pairs
        columns = {}
        for key, values in (("loss", total), ("loss_base", base), ("loss_fail", fail),
                            ("loss_l2", l2)):
            columns[key] = values[:, 0].tolist() if len(shares) == 1 else [
                math.fsum(float(v) * w for v, w in zip(row, shares)) for row in values]
        stats, counts = self.stats[:rounds, slot], self.counts[:rounds, slot]
        columns.update(gamma=schedule[:, 0].tolist(), lam=schedule[:, 1].tolist(),
                       p=schedule[:, 2].tolist(), n_failures=counts[:, 0].tolist(),
                       n_sampled=counts[:, 1].tolist(), margin_mean=(stats[:, 0] / self.n).tolist(),
                       margin_min=stats[:, 1].tolist(),
                       train_pairwise_accuracy=(stats[:, 2] / self.n).tolist())
        keys = ("gamma", "lam", "p", "loss", "loss_base", "loss_fail", "loss_l2", "n_failures",
                "n_sampled", "margin_mean", "margin_min", "train_pairwise_accuracy")
        return [{"round": t, **dict(zip(keys, values))}
                for t, values in enumerate(zip(*(columns[key] for key in keys)))]
