"""Train a classifier on a task's dataset and write a run directory.

TASK is one of: mnist, fashion-mnist, digits, fire, ecg, images (images needs a DIR).

--on USER@HOST runs the same training on another machine over SSH (first use sets mltool up
there) and brings the run folder back here; --devices N trains on N GPUs (MirroredStrategy).
See docs/train-remote.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mltool.cli._options import JsonOpt, SeedOpt, ssh_options
from mltool.train.models import ARCH_TABLE


def _help() -> str:
    rows = "\n".join(f"  {a:<12} {inputs:<12} {params}" for a, (inputs, params) in ARCH_TABLE.items())
    # \b keeps Click from re-wrapping the table
    return (f"{__doc__}\nArchitectures (--arch), their inputs and parameter counts:\n\n\b\n{rows}\n\n"
            "All but mobilenetv2 take any input size. mobilenetv2: ImageNet transfer learning (--weights "
            "imagenet|none|FILE, --alpha, --fine-tune N); its head adds 1,281 parameters per class; inputs scaled to "
            "[-1, 1], recorded in the model's metadata.")


# The command's help is this module's docstring (see mltool.cli.COMMANDS): it carries the table.
__doc__ = _help()


@ssh_options
def train(
    task: Annotated[Optional[str], typer.Argument(help="mnist | fashion-mnist | digits | fire | ecg | images", show_default=False)] = None,
    directory: Annotated[Optional[Path], typer.Argument(help="Image folder for the 'images' task (same as --data).", show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Dataset folder (IDX files, or one subfolder per class). With --on: a local folder (sent when it changed) or host:PATH (already there).")] = None,
    arch: Annotated[Optional[str], typer.Option(help="Model: cnn | dense | fire-cnn | cnn1d | mobilenetv2 (table above). Default depends on the task.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (early stopping may end sooner). Default per task.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Mini-batch size. Default per task.")] = None,
    seed: SeedOpt = 0,
    val_split: Annotated[float, typer.Option("--val-split", help="Fraction of training data held out for validation.")] = 0.1,
    test_split: Annotated[float, typer.Option("--test-split", help="Fraction held out for the test set (datasets without an official test split).")] = 0.2,
    limit: Annotated[Optional[int], typer.Option("--max-samples", help="Use at most N samples of each source split (quick runs).")] = None,
    patience: Annotated[int, typer.Option(help="Early stopping: epochs without val_loss improvement (0 = off).")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="Initial learning rate (cosine decay).")] = 1e-3,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Resize images to N x N (fire/images; default 64, mobilenetv2 96; mobilenetv2 takes 96..224).")] = None,
    window: Annotated[Optional[int], typer.Option(help="Samples per signal window (ecg; default rate x 10 s).")] = None,
    rate: Annotated[int, typer.Option("--rate", help="Signal sample rate in Hz (ecg).")] = 360,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to create (must not exist). Default runs/train/<task>-N.")] = None,
    project: Annotated[Path, typer.Option("--project", help="Parent folder of numbered runs.")] = Path("runs/train"),
    download: Annotated[bool, typer.Option("--download/--no-download", help="Allow Keras downloads (MNIST data, ImageNet weights) when not found locally.")] = True,
    augment: Annotated[bool, typer.Option("--augment", help="Image tasks: random horizontal flip, rotation (10 deg), zoom (10%), brightness (20%) on training batches; never part of the saved model.")] = False,
    alpha: Annotated[Optional[float], typer.Option("--alpha", help="mobilenetv2 width: 0.35 (default) | 0.5 | 0.75 | 1.0.")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="mobilenetv2 base weights: imagenet (default; Keras cache, else download) | none | FILE.")] = None,
    fine_tune: Annotated[int, typer.Option("--fine-tune", help="mobilenetv2: after training the head, unfreeze the top N layers of the base and train on at --lr / 10.")] = 0,
    fine_tune_epochs: Annotated[Optional[int], typer.Option("--fine-tune-epochs", help="Epochs of the --fine-tune phase (default: --epochs).")] = None,
    devices: Annotated[str, typer.Option("--devices", help="auto (one device: the first GPU, else the CPU) | cpu | N (N replicas under MirroredStrategy; --batch-size is the global batch; without a GPU, N logical CPU devices).")] = "auto",
    on: Annotated[Optional[str], typer.Option("--on", metavar="USER@HOST", help="Train on another machine over SSH: sets up mltool there on first use, sends the dataset if it changed, streams progress, brings the run folder back here.")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="With --on: start the run and return; `mltool train --attach` picks it up.")] = False,
    attach: Annotated[bool, typer.Option("--attach", help="Pick up a run started with --on --detach (the latest, or --job ID): follow it and bring its folder back.")] = False,
    job: Annotated[Optional[str], typer.Option("--job", help="With --attach: which detached run (its id or a prefix).")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="With --attach: stop the detached run instead (nothing of it is kept).")] = False,
    json_out: JsonOpt = False,
    *,
    ssh: Any,
    remote_dir: str,
) -> None:
    """Train a classifier on real (or clearly labelled synthetic) data and evaluate it on held-out data."""
    from mltool.cli._output import print_json, stderr_console
    from mltool.errors import ConfigError
    from mltool.train.run import TrainConfig
    from mltool.train.run import train as run_train

    console = stderr_console()
    from rich.markup import escape

    log = lambda msg: console.print(f"[dim]{escape(msg)}[/dim]", soft_wrap=True, highlight=False)  # noqa: E731
    if attach:
        if task is not None or directory is not None or detach:
            raise ConfigError("--attach picks up a detached run: it takes no TASK, DIR or --detach",
                              "run `mltool train --attach` (add --job ID to choose one)")
        from mltool.train.remote import attach as attach_run

        result = attach_run(job, ssh=ssh, on=on, listener=RichProgress(console), log=log, stop=stop)
        if result is None:
            return
        _render(console, result)
        if json_out:
            print_json({**result.summary(), "remote_timings": result.timings})
        return
    if task is None:  # optional only for --attach: otherwise Click's own usage error
        from typer._click.exceptions import MissingParameter
        from typer._click.globals import get_current_context

        ctx = get_current_context()
        raise MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == "task"))
    if job is not None or stop:
        flag = "--job" if job is not None else "--stop"
        raise ConfigError(f"{flag} goes with --attach", f"drop {flag}, or add --attach")
    if detach and on is None:
        raise ConfigError("--detach needs --on USER@HOST", "add --on, or drop --detach")
    if data is not None and data.startswith("host:") and on is None:
        raise ConfigError(f"--data {data} names a folder on the training host, but there is no --on", "add --on USER@HOST")
    if directory is not None:
        if data is not None:
            raise ConfigError("both a DIR argument and --data were given", "pass the dataset folder once")
        if task != "images":
            raise ConfigError(f"unexpected argument '{directory}' for task {task}", f"use --data {directory}")
        data = str(directory)
    config = TrainConfig(
        task=task, data=data, arch=arch, epochs=epochs, batch_size=batch_size, seed=seed,
        val_split=val_split, test_split=test_split, limit=limit, patience=patience, learning_rate=lr,
        image_size=image_size, window=window, rate_hz=rate, out=out, project=project, download=download,
        augment=augment, alpha=alpha, weights=weights, fine_tune=fine_tune, fine_tune_epochs=fine_tune_epochs,
        devices=devices,
    )
    if on is not None:
        from mltool.train.remote import train_remote

        outcome = train_remote(config, on, ssh, remote_dir, listener=RichProgress(console), log=log, detach=detach)
        if detach:
            console.print(f"job {outcome.job} running on {on}; `mltool train --attach --job {outcome.job}` follows it "
                          "and brings the run folder back", soft_wrap=True, markup=False)
            if json_out:
                print_json(outcome.summary())
            return
        _render(console, outcome)
        if json_out:
            print_json({**outcome.summary(), "remote_timings": outcome.timings})
        return
    # SIGTERM ends a run like Ctrl-C (the root command installs that for every phase): its .partial folder is removed
    result = run_train(
        config,
        progress=lambda n_epochs, steps: _progress_callback(console, n_epochs, steps),
        log=log,
    )
    _render(console, result)
    if json_out:
        print_json(result.summary())


class RichProgress:
    """Draws a run's progress (a :mod:`mltool.train.progress` listener): a Rich bar per epoch and a
    metrics line when each ends. The same view for a run here and one streamed from ``--on``."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.progress: Any = None
        self.task: Any = None
        self.n_epochs = 0
        self.steps = 0

    def train_begin(self, n_epochs: int, steps: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.n_epochs, self.steps = n_epochs, steps
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[total_epochs]}"),
            BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(),
            console=self.console, transient=True,
        )
        self.progress.start()
        self.task = None

    def epoch_begin(self, epoch: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("", total=self.steps, epoch=epoch + 1, total_epochs=self.n_epochs, metrics="")

    def batch(self, batch: int, logs: dict[str, float]) -> None:
        if self.task is None:
            return
        text = f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f}"
        self.progress.update(self.task, completed=batch + 1, metrics=text)

    def epoch_end(self, epoch: int, logs: dict[str, float], seconds: float) -> None:
        parts = [f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")]
        self.console.print(f"epoch {epoch + 1:>3}/{self.n_epochs}  " + "  ".join(parts) + f"  ({seconds:.1f}s)", soft_wrap=True)

    def train_end(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _progress_callback(console: Any, n_epochs: int, steps: int) -> Any:
    """A Keras callback drawing a Rich progress bar per epoch and a metrics line when it ends."""
    from mltool.train.progress import keras_callback

    return keras_callback(RichProgress(console), n_epochs, steps)


def _render(console: Any, result: Any) -> None:
    from rich.table import Table

    from mltool.cli._output import fmt_pct

    info = result.info
    m = info.metrics
    t = info.training
    table = Table(title=f"{info.task} / {info.arch} — held-out test set ({m['test_samples']} samples)")
    table.add_column("class")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    missing = set(m.get("classes_missing_from_test") or [])
    for name, pc in m["per_class"].items():
        if name in missing:
            table.add_row(name, "[yellow]no test samples[/yellow]", "-")
        else:
            table.add_row(name, fmt_pct(pc["precision"]), fmt_pct(pc["recall"]))
    console.print(table)
    if missing:
        console.print(f"[yellow]warning: the test split has no samples of {', '.join(sorted(missing))}; "
                      "its accuracy says nothing about them[/yellow]", soft_wrap=True)
    synthetic = " [yellow](SYNTHETIC data)[/yellow]" if info.dataset.synthetic else ""
    console.print(
        f"[bold]test accuracy {fmt_pct(m['accuracy'])}[/bold]  loss {m['loss']:.4f}  "
        f"val accuracy {fmt_pct(m['val_accuracy'])}  epochs {t['epochs_run']}/{t['epochs_requested']}"
        f"{' (early stop, best ' + str(t['best_epoch']) + ')' if t['stopped_early'] else ''}  "
        f"{t['duration_s']:.1f}s{synthetic}"
    )
    where = info.ran_on
    if where.get("via") == "ssh":
        data = where.get("data") or {}
        sent = f"; dataset {data['status']}, {data['bytes_sent']:,} bytes sent" if "status" in data else ""
        console.print(f"trained on {where.get('hostname') or where.get('target')} over SSH (job {where.get('job')}{sent})",
                      soft_wrap=True, markup=False)
    console.print(f"run saved to [bold]{result.run_dir}[/bold]")
    import shlex

    console.print(f"next: mltool convert {shlex.quote(str(result.run_dir))} --quantize int8", soft_wrap=True, markup=False)
