"""Section 4 of benchmarks/speed.py: fit and score time against each size (log-log slope)."""

from sklearn_reclag import HopfieldEnergyDetector, RecLagDetector
from sklearn_reclag.detectors._banks import pad_banks

from .common import HE_PAPER, OFFICIAL, loglog_slope, make_data, median_time

def section_scaling(cfg, device, seed, repeats, out):
    sf, sh, sr = cfg["scale_fit"], cfg["scale_he"], cfg["scale_reclag"]
    base_n, base_m, base_d = sf["n_per_class"][1], sf["n_memories"][1], sf["n_features"][1]
    C = cfg["n_classes"]
    lines = []

    def fit_time(n, m, d):
        X, y, *_, head = make_data(C, n, d, seed=seed)
        det = RecLagDetector(**{**OFFICIAL, "n_memories": m}, max_epochs=sf["epochs"],
                             head=head, device=device, random_state=seed)
        return median_time(lambda: det.fit(X, y), device, repeats)

    def series(label, param, values, fn):
        times = [fn(v) for v in values]
        cells = " | ".join(f"{v:,} | {t:.3g}" for v, t in zip(values, times))
        lines.append(f"| {label} | {param} | {cells} | **{loglog_slope(values, times):.2f}** |")

    fit_label = f"RecLag fit (`sae`, {sf['epochs']} epochs)"
    series(fit_label, "rows per class (x10 classes)", sf["n_per_class"],
           lambda n: fit_time(n, base_m, base_d))
    series(fit_label, "n_memories per class (stored)", sf["n_memories"],
           lambda m: fit_time(base_n, m, base_d))
    series(fit_label, "n_features", sf["n_features"], lambda d: fit_time(base_n, base_m, d))

    def he_time(n_test, n_stored, d):
        X, y, *_, head = make_data(C, -(-n_stored // C), d, seed=seed)
        he = HopfieldEnergyDetector(**HE_PAPER, head=head, device=device)
        # Fit cheaply (the offset pass is not what is timed): one stored row per class
        # scores the training rows, then the full banks are swapped in.
        per_class = -(-n_stored // C)
        he.fit(X[:: max(per_class // 2, 1)], y[:: max(per_class // 2, 1)])
        he.memories_, he.memory_mask_ = pad_banks(X, y, C)
        Xt = make_data(C, 2, d, seed=seed, n_id_test=n_test)[2]
        return median_time(lambda: he.score_samples(Xt), device, repeats,
                           warmup=lambda: he.score_samples(Xt[:200]))

    label = f"HE score ({C} classes)"
    series(label, "test rows", sh["n_test"], lambda n: he_time(n, sh["n_stored"][1],
                                                               sh["n_features"][1]))
    series(label, "stored rows", sh["n_stored"], lambda s: he_time(sh["n_test"][1], s,
                                                                   sh["n_features"][1]))
    series(label, "n_features", sh["n_features"], lambda d: he_time(sh["n_test"][1],
                                                                    sh["n_stored"][1], d))

    def rl_time(n_test, m, d):
        X, y, *_, head = make_data(C, 200, d, seed=seed)
        det = RecLagDetector(**{**OFFICIAL, "n_memories": m}, solver="em", max_epochs=2,
                             head=head, device=device, random_state=seed).fit(X, y)
        Xt = make_data(C, 2, d, seed=seed, n_id_test=n_test)[2]
        return median_time(lambda: det.score_samples(Xt), device, repeats)

    label = f"RecLag score ({C} classes)"
    series(label, "test rows", sr["n_test"], lambda n: rl_time(n, sr["n_memories"][1],
                                                               sr["n_features"][1]))
    series(label, "n_memories per class (stored)", sr["n_memories"],
           lambda m: rl_time(sr["n_test"][1], m, sr["n_features"][1]))
    series(label, "n_features", sr["n_features"], lambda d: rl_time(sr["n_test"][1],
                                                                    sr["n_memories"][1], d))
    out += [
        "## 4. Scaling (log-log)",
        "",
        ("Seconds (median of "
        f"{repeats}) as one size varies and the others stay at the middle value; the slope "
        "is the least-squares fit of log(time) on log(size) (1 = linear). Fit times include "
        "the fixed cost of `fit` (validation, head routing, gamma calibration)."),
        "",
        "| what | varies | size | s | size | s | size | s | slope |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
        "",
    ]
