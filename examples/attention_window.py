"""Does a pretrained base fail on long tasks because of their length? Window its attention and see.

    python examples/attention_window.py --model RUN/pretrain [--task 0-1-4-5-2-3-6-7-4-5-0-1] \
        [--windows 0 8 12 16 24 32] [--layers 2 3] [--copy-window 12 --copy-to DIR]

Prints the teacher-forced action NLL of the base on fresh expert episodes of `--task`, split by how many
colours the agent has visited (odd counts: the target is the partner of the colour just visited, a rule
pretraining teaches), once per attention window (0: the whole past, as pretrained). Pretraining episodes
end at their sixth colour, about 31 steps, so on a 12-colour task (about 63 steps) a full-attention base
attends over more keys and longer distances than it ever saw; a window no longer than the pretraining
episodes keeps every attention pattern a familiar one. `--layers` windows only those blocks (0-based; the
others keep the whole past). `--copy-to` writes a copy of the checkpoint folder whose config carries
`attn_window = --copy-window` (and `attn_window_layers = --layers`), for running any phase (controllers,
codes, rl) on the windowed base without retraining it. docs/RESULTS.md (Sessions 9 and 15) has the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from internal_rl.analysis.progress_nll import nll_by_colours_visited
from internal_rl.data.pinpad_dataset import generate_pinpad
from internal_rl.envs.pinpad import parse_task
from internal_rl.models.sequence_model import SequenceModel


def copy_with_window(model: str | Path, window: int, out: str | Path, layers: list[int] | None = None) -> Path:
    """Copy a checkpoint folder's config and weights to `out`, setting the model's attention window (on the
    blocks in `layers`; None: every block)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(model) / "model.safetensors", out / "model.safetensors")
    config = json.loads((Path(model) / "config.json").read_text())
    config["model"]["attn_window"] = window
    config["model"]["attn_window_layers"] = layers
    config["windowed_copy_of"] = str(model)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    SequenceModel.from_pretrained(out)  # fails here, not in a later phase, if the copy is unreadable
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="pretrained checkpoint folder")
    p.add_argument("--task", default="0-1-4-5-2-3-6-7-4-5-0-1")
    p.add_argument("--windows", type=int, nargs="+", default=[0, 8, 12, 16, 24, 32])
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layers", type=int, nargs="+", default=None, help="blocks to window (default: every block)")
    p.add_argument("--copy-window", type=int, default=0)
    p.add_argument("--copy-to", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n_colours = len(parse_task(args.task))

    model = SequenceModel.from_pretrained(args.model)
    data = generate_pinpad(args.episodes, tasks=[args.task], seed=args.seed, progress=False)
    print(f"task {args.task}: {args.episodes} expert episodes, mean length {data.num_steps / len(data):.1f} steps")
    print("NLL after k colours visited")
    print("window | k = " + " ".join(f"{k:>5d}" for k in range(n_colours)))
    for w in args.windows:
        model.set_attn_window(w, None if args.layers is None else tuple(args.layers))
        rows = {r["colours_visited"]: r["nll"] for r in nll_by_colours_visited(model, data, args.episodes,
                                                                              max_visits=n_colours)}
        print(f"{w:6d} |     " + " ".join(f"{rows.get(k, float('nan')):5.3f}" for k in range(n_colours)))
    if args.copy_to:
        print(f"wrote {copy_with_window(args.model, args.copy_window, args.copy_to, args.layers)}")


if __name__ == "__main__":
    main()
