"""`superserve ...` commands."""
from __future__ import annotations

from pathlib import Path

import typer

from .bundle_layout import PROFILE

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Serve weight-shared SuperNets: SubNetAct actuation + SlackFit scheduling.")


@app.callback()
def _root() -> None:
    """Serve weight-shared SuperNets: SubNetAct actuation + SlackFit scheduling."""


@app.command()
def train(
    data: Path = typer.Option(Path("/usr/share/datasets/fashion-mnist"),
                              help="Fashion-MNIST IDX directory, or an image folder DIR/<class>/<images> "
                                   "(optionally DIR/train/ and DIR/test/)"),
    out: Path = typer.Option(Path("runs/train"), help="output directory (checkpoint, weights)"),
    epochs: int = 14, batch_size: int = 128,
    lr: float = typer.Option(None, help="peak learning rate (default: 0.2 for resnet, 1e-3 for vit)"),
    seed: int = 0,
    num_random: int = typer.Option(2, help="random SubNets per step besides largest and smallest"),
    threads: int = typer.Option(0, help="torch threads (0: default)"),
    limit: int = typer.Option(0, help="train on the first N images only (smoke test)"),
    precision: str = typer.Option("auto", help="auto (bf16 autocast where the CPU runs it natively), bf16, fp32"),
    device: str = typer.Option("cpu", help="cpu, cuda (GPU 0) or cuda:N"),
    space: Path = typer.Option(None, help="SuperNet space file (JSON or TOML: input_size, depths, widths, "
                                          "expand_ratios, ...; superserve/supernet/space_file.py); default: "
                                          "Fashion-MNIST's space. For --family vit: the elastic choices "
                                          "(depth_choices, head_choices, ffn_choices, embed_choices)"),
    family: str = typer.Option("resnet", help="resnet (the conv SuperNet) or vit (a transformer SuperNet: "
                                              "conv stem, elastic depth/heads/FFN/embedding; Fashion-MNIST only)"),
    weight_decay: float = typer.Option(None, help="default: 5e-5 (resnet, SGD), 0.05 (vit, AdamW)"),
    reschedule: bool = typer.Option(False, help="resume with another --epochs (the cosine schedule continues "
                                                "over the new total)"),
    init_from: Path = typer.Option(None, help="start from these trained SuperNet weights (same sizes; the space "
                                              "may hold smaller SubNets: a later stage of progressive shrinking)"),
) -> None:
    """Train a SuperNet (sandwich rule + in-place distillation) on Fashion-MNIST or an image
    folder; resumable. The output holds the weights and data.json (normalisation, classes)."""
    dev = _device_option("train", device)
    from .train import TrainConfig, train as run

    vit = family == "vit"
    cfg = TrainConfig(data=str(data), out=str(out), epochs=epochs, batch_size=batch_size,
                      lr=lr if lr is not None else (1e-3 if vit else 0.2),
                      weight_decay=weight_decay if weight_decay is not None else (0.05 if vit else 5e-5),
                      seed=seed, num_random=num_random, threads=threads, limit=limit,
                      precision=precision, device=_one_device(dev), space=str(space) if space else "",
                      family=family, optimizer="adamw" if vit else "sgd", reschedule=reschedule,
                      init_from=str(init_from) if init_from else "")
    try:
        weights = run(cfg)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"superserve train: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote {weights}")


def _device_option(command: str, text: str):
    """The checked --device of ``command``, or a clear error (exit 2) naming it."""
    from .device import DeviceError, check_device

    try:
        return check_device(text)
    except DeviceError as exc:
        typer.echo(f"superserve {command}: {exc}", err=True)
        raise typer.Exit(2)


def _one_device(dev) -> str:
    """A single-process command runs on one device: ``cuda`` means cuda:0 there."""
    return f"cuda:{dev.index or 0}" if dev.is_cuda else "cpu"


def _bar(description: str):
    """A rich progress callback (i, n) for long offline steps."""
    from rich.progress import Progress

    prog = Progress(transient=False)
    task = prog.add_task(description, total=None)
    prog.start()

    def update(i: int, n: int) -> None:
        prog.update(task, completed=i, total=n)
        if i >= n:
            prog.stop()
    return update


@app.command()
def search(
    weights: Path = typer.Argument(..., help="trained SuperNet weights (safetensors)"),
    out: Path = typer.Option(Path("runs/bundle"), help="bundle directory to write"),
    data: Path = typer.Option(None, help="Fashion-MNIST IDX directory or image folder (default: the data the "
                                         "weights were trained on, else /usr/share/datasets/fashion-mnist)"),
    initial: int = 150, generations: int = 6, per_generation: int = 50,
    calib_images: int = typer.Option(2000, help="training images SubnetNorm statistics are computed from"),
    search_val_images: int = typer.Option(5000, help="validation images the search ranks candidates on"),
    report: Path = typer.Option(None, help="write the search/accuracy/profile summary JSON here"),
    candidates_from: Path = typer.Option(None, help="a previous --report on the same weights: re-measure "
                                         "latency and re-front its candidates instead of searching again"),
) -> None:
    """Pareto search, SubnetNorm calibration, accuracy table and latency profile -> a bundle."""
    from .profiling.pipeline import BuildSettings, build_bundle

    bars: dict = {}

    def progress(stage: str, i: int, n: int) -> None:
        if stage not in bars:
            bars[stage] = _bar(stage)
        bars[stage](i, n)

    settings = BuildSettings(data=str(data) if data else None, initial=initial, generations=generations,
                             per_generation=per_generation, calib_images=calib_images,
                             search_val_images=search_val_images,
                             candidates_from=str(candidates_from) if candidates_from else None)
    try:
        summary = build_bundle(weights, out, settings, report, progress)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"superserve search: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote {out}: {summary['pareto_size']} Pareto SubNets of {summary['search']['evaluated']} "
               f"evaluated ({summary['total_seconds']} s)")


@app.command()
def profile(
    bundle: Path = typer.Option(None, help="bundle directory (default: the embedded SuperNet)"),
    out: Path = typer.Option(Path(PROFILE), help="profile file to write"),
    threads: int = typer.Option(1, help="torch threads, as one serving worker gets"),
    repeats: int = 15,
    device: str = typer.Option("cpu", help="cpu, cuda (GPU 0) or cuda:N: where the SubNets are timed"),
    max_batch: int = typer.Option(16, help="largest batch the profile covers"),
) -> None:
    """Measure the latency profile of a bundle's SubNets (batch 1..16) on this device."""
    from .bundle_layout import EMBEDDED_DIR
    from .profiling.measure import check_properties
    from .profiling.pipeline import reprofile

    dev = _device_option("profile", device)
    prof = reprofile(bundle or EMBEDDED_DIR, out, threads, max_batch=max_batch, repeats=repeats, progress=_bar("profile"),
                     device=_one_device(dev))
    props = check_properties(prof)
    typer.echo(f"wrote {out} ({len(prof)} SubNets, {prof.device}, {threads} threads)")
    for k, v in props.items():
        typer.echo(f"  {k}: {v:.3f}")


@app.command("import-ofa")
def import_ofa(
    checkpoint: Path = typer.Argument(..., help="OFA checkpoint ({'state_dict': ...}, e.g. ofa_mbv3_d234_e346_k357_w1.0)"),
    arch: str = typer.Option(..., help="resnet50 | mbv3-w1.0 | mbv3-w1.2 | proxyless (w1.3)"),
    images: Path = typer.Option(..., help="directory of images (jpg/png; recursive) to calibrate SubnetNorm on"),
    out: Path = typer.Option(Path("runs/ofa-bundle"), help="bundle directory to write"),
    subnets: Path = typer.Option(None, help="JSON list of SubNets to serve: {\"id\" or \"config\" (OFA's "
                                            "set_active_subnet arguments), \"r\", \"accuracy\"}"),
    num_subnets: int = typer.Option(20, help="without --subnets: serve the smallest, the largest and random ones"),
    input_size: int = typer.Option(224, help="resolution of served requests"),
    resolutions: str = typer.Option("", help="comma-separated SubNet resolutions (elastic resolution; "
                                             "default: --input-size)"),
    calib_images: int = typer.Option(256, help="images SubnetNorm statistics are computed from"),
    max_batch: int = typer.Option(16, help="largest batch the profile covers"),
    repeats: int = typer.Option(15, help="timed rounds per (SubNet, batch) cell"),
    threads: int = typer.Option(1, help="torch threads while profiling (what one worker gets)"),
) -> None:
    """Import a Once-for-All SuperNet checkpoint as a servable bundle (SubnetNorm + latency profile)."""
    from .profiling.ofa_import import OFAImportSettings, build_ofa_bundle
    from .supernet import CheckpointError

    try:
        res = tuple(int(r) for r in resolutions.split(",") if r.strip())
        settings = OFAImportSettings(arch=arch, images=images, subnets=subnets, num_subnets=num_subnets,
                                     input_size=input_size, resolutions=res, calib_images=calib_images,
                                     max_batch=max_batch, repeats=repeats, threads=threads)
        bars: dict = {}

        def progress(stage: str, i: int, n: int) -> None:
            if stage not in bars:
                bars[stage] = _bar(stage)
            bars[stage](i, n)

        summary = build_ofa_bundle(checkpoint, out, settings, progress)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"superserve import-ofa: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote {out}: {summary['subnets']} SubNets of OFA {arch}, SubnetNorm from "
               f"{summary['calibration_images']} images; serve it with `superserve serve --bundle {out}`")


@app.command("import-bert")
def import_bert(
    directory: Path = typer.Argument(..., help="Hugging Face BERT directory: config.json + model.safetensors "
                                               "(or pytorch_model.bin, read weights-only); DynaBERT's format"),
    out: Path = typer.Option(Path("runs/bert-bundle"), help="bundle directory to write"),
    seq_len: int = typer.Option(128, help="token ids per served request"),
    subnets: Path = typer.Option(None, help="JSON list of SubNets to serve: {\"id\", \"accuracy\"} "
                                            "(default: DynaBERT's depth x width grid, MAC-ordered stand-in accuracy)"),
    depths: str = typer.Option("0.5,0.75,1.0", help="comma-separated depth multipliers (DynaBERT's)"),
    widths: str = typer.Option("0.25,0.5,0.75,1.0", help="comma-separated width multipliers (heads and FFN)"),
    max_batch: int = typer.Option(16, help="largest batch the profile covers"),
    repeats: int = typer.Option(15, help="timed rounds per (SubNet, batch) cell"),
    threads: int = typer.Option(1, help="torch threads while profiling (what one worker gets)"),
) -> None:
    """Import a BERT SuperNet (DynaBERT / Hugging Face format) as a servable bundle (latency profile)."""
    from .profiling.bert_import import BertImportSettings, build_bert_bundle
    from .supernet import CheckpointError

    try:
        settings = BertImportSettings(
            seq_len=seq_len, subnets=subnets, max_batch=max_batch, repeats=repeats, threads=threads,
            depth_choices=tuple(float(d) for d in depths.split(",") if d.strip()),
            width_choices=tuple(float(w) for w in widths.split(",") if w.strip()))
        summary = build_bert_bundle(directory, out, settings, lambda stage, i, n: None)
    except (CheckpointError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"superserve import-bert: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"wrote {out}: {summary['subnets']} SubNets of {directory} at {seq_len} tokens "
               f"(accuracy: {summary['accuracy_source']})")


def _mount_simulator() -> None:
    from .sim.cli import simulate_command

    app.command("simulate", help="Simulate a policy on a workload with profiled latencies (virtual clock).")(
        simulate_command)


_mount_simulator()


def _mount_bench() -> None:
    from .loadgen.cli import bench_command

    app.command("bench", help="Replay a workload against a running server, open loop (client-side SLO attainment).")(
        bench_command)


_mount_bench()


def _mount_demo() -> None:
    from .experiments.demo import demo_command

    app.command("demo", help="Start the server; replay a bursty trace under SlackFit, two Clipper+ versions and "
                             "INFaaS; print the comparison and write the plot (what `make demo` runs).")(demo_command)


_mount_demo()


def _mount_serve() -> None:
    from .serving.cli import serve_command

    app.command("serve", help="Serve a SuperNet over KServe v2 REST and gRPC (SlackFit or a baseline policy).")(
        serve_command)


_mount_serve()


def _mount_reload() -> None:
    from .serving.cli import reload_command

    app.command("reload", help="Ask a running server to swap in a new bundle without dropping requests.")(
        reload_command)


_mount_reload()


def _mount_workers() -> None:
    from .serving.cli import workers_command

    app.command("workers", help="Add or remove workers of a running server (or show how many serve).")(
        workers_command)


_mount_workers()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
