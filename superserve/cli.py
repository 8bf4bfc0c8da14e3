"""`superserve ...` commands."""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Serve weight-shared SuperNets: SubNetAct actuation + SlackFit scheduling.")


@app.callback()
def _root() -> None:
    """Serve weight-shared SuperNets: SubNetAct actuation + SlackFit scheduling."""


@app.command()
def train(
    data: Path = typer.Option(Path("/usr/share/datasets/fashion-mnist"), help="Fashion-MNIST IDX directory"),
    out: Path = typer.Option(Path("runs/train"), help="output directory (checkpoint, weights)"),
    epochs: int = 8, batch_size: int = 128, lr: float = 0.2, seed: int = 0,
    num_random: int = typer.Option(2, help="random SubNets per step besides largest and smallest"),
    threads: int = typer.Option(0, help="torch threads (0: default)"),
    limit: int = typer.Option(0, help="train on the first N images only (smoke test)"),
) -> None:
    """Train the Fashion-MNIST SuperNet (sandwich rule + in-place distillation); resumable."""
    from .train import TrainConfig, train as run

    cfg = TrainConfig(data=str(data), out=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
                      seed=seed, num_random=num_random, threads=threads, limit=limit)
    weights = run(cfg)
    typer.echo(f"wrote {weights}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
