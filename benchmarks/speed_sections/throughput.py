"""Section 2 of benchmarks/speed.py: scoring throughput against the bare chunked matmul +
logsumexp of the same shapes (the hardware-limit baseline, written inline here)."""

import copy
from functools import partial

import numpy as np
import torch

from .common import BLOCK, MIB, NAIVE_LIMIT, QUICK, interleaved_times, make_data, verdict

def baseline_lse(X, stored, beta, device, block=BLOCK):
    """The hardware-limit baseline: chunked ``logsumexp(beta * V S^T)`` over all stored
    rows, one GEMM per chunk of test rows, from a numpy array to a numpy array."""
    S = torch.as_tensor(stored, device=device)
    rows = max(1, block // S.shape[0])
    out = []
    with torch.no_grad():
        for start in range(0, len(X), rows):
            V = torch.as_tensor(X[start:start + rows], device=device)
            out.append(torch.logsumexp(beta * (V @ S.T), dim=1))
        return torch.cat(out).cpu().numpy()


def naive_lse(X, stored, beta, device):
    """The naive one-shot product: the whole (n_test x n_stored) matrix at once."""
    with torch.no_grad():
        V = torch.as_tensor(X, device=device)
        S = torch.as_tensor(stored, device=device)
        return torch.logsumexp(beta * (V @ S.T), dim=1).cpu().numpy()


def baseline_route(X, head, device, block=BLOCK):
    """The head's argmax of every row, chunked: the routing of ``routing='predicted'``."""
    coef, intercept = (torch.as_tensor(a, device=device, dtype=torch.float32) for a in head)
    rows = max(1, block // coef.shape[0])
    with torch.no_grad():
        return torch.cat([
            torch.addmm(intercept, torch.as_tensor(X[start:start + rows], device=device),
                        coef.T).argmax(dim=1)
            for start in range(0, len(X), rows)
        ]).cpu().numpy()


def baseline_routed_lse(X, banks, bank_mask, beta, device, *, head=None, bank_of_row=None,
                        block=BLOCK):
    """The same baseline for rows routed to one bank each: the rows of bank c against
    the stored rows of bank c only (the work of routing='predicted'). The routing is
    the head's argmax computed here (``head``, timed with the rest), or given
    (``bank_of_row``, computed beforehand)."""
    if bank_of_row is None:
        bank_of_row = baseline_route(X, head, device, block)
    out = np.empty(len(X), dtype=np.float32)
    for c in range(len(banks)):
        rows = np.flatnonzero(bank_of_row == c)
        if len(rows):
            out[rows] = baseline_lse(X[rows], banks[c][bank_mask[c]], beta, device, block)
    return out


def section_throughput(cfg, device, seed, out, he_model, rl_model):
    # A GPU scores the 100,000 rows in well under a second; a 2-core CPU takes
    # minutes per pass, hence fewer rows there.
    n_test = cfg["n_test_memory"] if device == "cuda" else cfg["n_test_throughput"]
    D = cfg["n_features"]
    C = cfg["n_classes"]
    # Held-out rows of the training classes (scoring speed can depend on the data).
    X_test = make_data(C, 2, D, seed=seed, n_id_test=n_test)[2]
    results = {}
    rows = []
    for name, model in (("HE (`patterns='all'`)", he_model),
                        (f"RecLag ({C} x {rl_model.n_memories} memories)", rl_model)):
        beta = model.beta
        banks = model.memories_.astype(np.float32)
        mask = model.memory_mask_
        stored = banks[mask]
        n_stored = len(stored)
        head = (model.head_coef_, model.head_intercept_)
        for routing in ("predicted", "max"):
            scorer = copy.deepcopy(model).set_params(routing=routing)
            fns = [partial(scorer.score_samples, X_test)]
            if routing == "predicted":
                fns += [partial(baseline_routed_lse, X_test, banks, mask, beta, device,
                                head=head),
                        partial(baseline_routed_lse, X_test, banks, mask, beta, device,
                                bank_of_row=baseline_route(X_test, head, device))]
                work = f"each row vs its bank (~{n_stored // C:,} stored rows)"
            else:
                fns += [partial(baseline_lse, X_test, stored, beta, device)]
                work = f"each row vs all {n_stored:,} stored rows"
            times = interleaved_times(fns, device, cfg["rounds"])
            t_det, t_base = min(times[0]), min(times[1])
            ratio = t_base / t_det
            median_ratio = np.median(times[1]) / np.median(times[0])
            naive = "-"
            naive_rows = min(n_test, NAIVE_LIMIT // (4 * n_stored))
            if routing == "predicted":
                bank_only = min(times[2]) / t_det
                naive = (f"routing excluded from the baseline (given, untimed): "
                         f"{100 * bank_only:.0f} %")
            elif naive_rows >= min(n_test, 1000):
                X_n = X_test[:naive_rows]
                td, tn = (min(t) for t in interleaved_times(
                    [partial(scorer.score_samples, X_n),
                     partial(naive_lse, X_n, stored, beta, device)], device, cfg["rounds"]))
                naive = (f"naive at {100 * td / tn:.0f} % of the detector's speed "
                         f"(on {naive_rows:,} rows)")
            else:
                naive = "not run (> 1 GiB)"
            results[(name, routing)] = ratio
            rows.append(
                f"| {name} | `{routing}` | {n_test:,} x {D}; {work} | {n_test / t_det:,.0f} | "
                f"{n_test / t_base:,.0f} | **{100 * ratio:.0f} %** {verdict(ratio >= 0.7)} "
                f"| {100 * median_ratio:.0f} % | {naive} |")
    he_ratio = min(v for (n, _), v in results.items() if n.startswith("HE"))
    rl_ratio = min(v for (n, _), v in results.items() if n.startswith("RecLag"))
    smaller = "" if cfg is QUICK or n_test >= 100_000 else (
        f" The throughput test uses {n_test:,} test rows rather than 100,000 to keep the "
        "run short on a 2-core CPU; the 100,000-row pass is timed in section 3.")
    out += [
        "## 2. Scoring throughput vs the bare chunked matmul + logsumexp",
        "",
        "Baseline (written inline in this script): for each chunk of test rows, "
        "`torch.logsumexp(beta * (V @ S.T), dim=1)`, chunks sized to the detectors' block "
        f"({BLOCK * 4 // MIB} MiB of logits), numpy in, numpy out, doing the same work as "
        "the detector: with `routing='predicted'` the detectors route each row by the "
        "head's argmax and score it against the bank of that class only, so the baseline "
        "computes the same argmax (a chunked matmul with the head) and multiplies the rows "
        "of each class by that class's stored rows; the figure without the routing (argmax "
        "given, untimed) is in the last column. With `routing='max'` every row meets every "
        "stored row. The detectors' times are the public `score_samples` (input "
        "validation, head, per-class online logsumexp, float64 output included). "
        f"{cfg['rounds']} interleaved rounds of detector and baselines; rows/s from the "
        "minimum time of each (the median ratio beside it). Naive: the whole "
        "(n_test x n_stored) product in one piece, where it fits in 1 GiB; the test rows "
        "are held-out rows of the training classes." + smaller,
        "",
        ("| detector | routing | work | detector rows/s | baseline rows/s | "
        "detector / baseline (target >= 70 %) | median ratio | naive one-shot / note |"),
        "|---|---|---|---:|---:|---:|---:|---|",
        *rows,
        "",
        (f"- HE at >= 70 % of the baseline (worst routing): {verdict(he_ratio >= 0.7)} "
        f"({100 * he_ratio:.0f} %)."),
        (f"- RecLag at >= 70 % of the baseline (worst routing): {verdict(rl_ratio >= 0.7)} "
        f"({100 * rl_ratio:.0f} %)."),
        "",
    ]
    return {"he": he_ratio, "reclag": rl_ratio}
