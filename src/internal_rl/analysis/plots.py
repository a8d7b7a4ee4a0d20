"""Plots written by the phases (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _by_layer(x: list, series: list[tuple[list, str, str]], baseline: tuple[float, str], xlabel: str, ylabel: str,
              path: str | Path) -> None:
    """A small 0–1 line plot: one line per (values, marker, label) plus a dashed baseline."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for values, marker, label in series:
        ax.plot(x, values, marker, label=label)
    ax.axhline(baseline[0], color="grey", ls="--", label=baseline[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_probes(res: dict, path: str | Path) -> None:
    """Probe accuracy by layer (train and held-out) with the majority-class baseline."""
    _by_layer(res["layers"], [(res["train_accuracy"], "o-", "train"), (res["test_accuracy"], "s-", "held-out")],
              (res["majority_baseline"], "majority class"), "layer (0 = embedding)", "subgoal probe accuracy", path)


def plot_controllers(res: dict, path: str | Path) -> None:
    """Ground-truth controller success by control layer (post-training and pretraining tasks)."""
    _by_layer(res["layers"], [(res["post_task_success"], "o-", "post-training task"),
                              (res["pretrain_task_success"], "s-", "pretraining tasks")],
              (res["base_post_task_success"], "no controller (post task)"), "control layer", "success rate", path)


def plot_switching(arrays: dict, path: str | Path, episodes: int = 6) -> None:
    """β_t over time for a few episodes, background coloured by the ground-truth subgoal (paper Fig. A3)."""
    plt = _plt()
    beta, subgoals, mask = arrays["beta"], arrays["subgoals"], arrays["mask"]
    n = min(episodes, beta.shape[0])
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive"]
    fig, axes = plt.subplots(n, 1, figsize=(7, 1.1 * n + 0.6), sharex=True, squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        L = int(mask[i].sum())
        for t in range(L):
            g = int(subgoals[i, t])
            if g >= 0:
                ax.axvspan(t - 0.5, t + 0.5, color=colours[g % len(colours)], alpha=0.25, lw=0)
        ax.plot(range(L), beta[i, :L], "k.-", lw=1, ms=3)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("β", rotation=0)
    axes[-1, 0].set_xlabel("step t (background: ground-truth subgoal)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_success_curves(curves: dict[str, list[list[dict]]], path: str | Path) -> None:
    """Training success rate vs episodes and vs primitive env steps: median over seeds, 25–75% band."""
    import numpy as np
    from matplotlib.ticker import EngFormatter

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method, runs in curves.items():
        n = min(len(r) for r in runs)
        if n == 0:
            continue
        succ = np.array([[p["success"] for p in r[:n]] for r in runs])
        for ax, key in zip(axes, ("episodes", "env_steps")):
            x = np.median(np.array([[p[key] for p in r[:n]] for r in runs]), 0)
            med = np.median(succ, 0)
            lo, hi = np.percentile(succ, 25, 0), np.percentile(succ, 75, 0)
            (line,) = ax.plot(x, med, label=method)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
    for ax, label in zip(axes, ("episodes", "primitive env steps")):
        ax.set_xlabel(label)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 100k, 2M: long counts would overlap
        ax.set_ylabel("success rate (training batches)")
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rate_distortion(res: dict, path: str | Path) -> None:
    """Rate (KL/step) vs distortion (action NLL/step) per α, and switches per episode vs α."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for mode in ("frozen", "cotrained"):
        rows = res.get(mode)
        if not rows:
            continue
        kl, nll = [r["kl"] for r in rows], [r["nll"] for r in rows]
        (line,) = axes[0].plot(kl, nll, "o-", label=f"{mode} base")
        for r in rows:
            axes[0].annotate(f"{r['alpha']:g}", (r["kl"], r["nll"]), fontsize=7, color=line.get_color())
        axes[1].plot([r["alpha"] for r in rows], [r["switches_per_episode"] for r in rows], "o-",
                     color=line.get_color(), label=f"{mode} base")
        axes[1].axhline(rows[0]["subgoals_per_episode"], color="grey", ls="--")
    axes[0].set_xlabel("rate: KL per step (nats)")
    axes[0].set_ylabel("distortion: action NLL per step")
    axes[1].set_xscale("symlog", linthresh=0.05)
    axes[1].set_xlabel("α")
    axes[1].set_ylabel("switches per episode (β > 0.5)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sweep_pretrain(res: dict, path: str | Path) -> None:
    """Pretraining sweep (Fig. A2): best-layer post-task success per seed (dots) and median (line), and held-out NLL."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    pts, rows = res["points"], res["summary"]
    axes[0].plot([p["value"] for p in pts], [p["best_post_task_success"] for p in pts], "o", alpha=0.5, label="seeds")
    axes[0].plot([r["value"] for r in rows], [r["best_post_task_success_median"] for r in rows], "-", label="median")
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("GT controllers: post-task success")
    axes[1].plot([r["value"] for r in rows], [r["heldout_action_nll_median"] for r in rows], "o-", label="held-out action NLL")
    axes[1].plot([r["value"] for r in rows], [r["post_task_within_pair_nll_median"] for r in rows], "s--",
                 label="within-pair NLL, post task")
    axes[1].set_ylabel("nats per step")
    for ax in axes:
        ax.set_xlabel(res["param"])
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_hazards(series: dict[str, list[float]], path: str | Path, title: str = "") -> None:
    """Hazard per task position (analysis/endings.py), one line per run; even positions choose a pair."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for label, values in series.items():
        ax.plot(range(len(values)), values, "o-", ms=3, label=label)
    n = max(len(v) for v in series.values())
    for k in range(0, n, 2):
        ax.axvspan(k - 0.5, k + 0.5, color="0.92", lw=0)
    ax.set_xlabel("correct colours visited (shaded: choosing the next pair)")
    ax.set_ylabel("fraction of episodes ending here")
    ax.set_xticks(range(n))
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
