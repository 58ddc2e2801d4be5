"""``loihi-stable``: train robust SNNs, export them to NetX and run them on Loihi."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer._click.exceptions import ClickException  # typer 0.29 vendors click (pinned in requirements.txt)
from typer.core import TyperGroup

from . import guards, interrupts, sharding, threads
from .allocator import keep_freed_memory
from .errors import UserError
from .budget import check_eps, read_fraction
from .launch import QUIET_STOP

class OneLineErrors(TyperGroup):
    """Usage errors (unknown option, a value that is not a number, a missing argument) as one
    ``error:`` line and exit code 2, like every other bad input, instead of click's framed box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _said
        _said = False
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except ClickException as err:
            if not err.format_message():  # no command given: the help was shown, nothing is wrong
                return 0 if not standalone_mode else sys.exit(0)
            command = " ".join(err.ctx.command_path.split()[1:]) if getattr(err, "ctx", None) else ""
            typer.echo(f"error: {err.format_message()} (see 'loihi-stable {command + ' ' if command else ''}--help')",
                       err=True)
            code = 2
        except (typer.Abort, KeyboardInterrupt):  # a Ctrl-C before a command took over SIGINT (imports, parsing)
            say(interrupts.message())
            code = 130
        if code == 130 and not _said:  # typer makes a Ctrl-C just after the command's end a silent exit 130
            code = report_interrupt(interrupts.message())
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


# options several commands share, written once
LIMIT = typer.Option(None, help="Use only the first N test samples.")
DATA_ROOT = typer.Option(None, help="Folder of the data set (a folder named inside a file is never read).")
JSON_OUT = typer.Option(None, "--json", help="Write results as JSON.")
QUIET = typer.Option(False, help="No progress bar.")
CHIP_ATTACK = typer.Option("snn-adaptive", help="snn-adaptive (AutoAttack, then APGD-CE/DLR/T through the spike "
                                                 "backwards searched per model; with run, Square against the chip), "
                                                 "autoattack, fast (worst case per sample of the suite), none (run: "
                                                 "clean only), or one of fgsm, pgd, apgd-ce, apgd-dlr, apgd-t, square, "
                                                 "gaussian, adaptive "
                                                 "(netx_export.analysis.deploy.ATTACKS).")
CHIP_BATCH = typer.Option(512, help="Samples crafted and run at once (under torchrun, the unit shared out).")
CHIP_SIDE_DEVICE = typer.Option("auto", help="auto (a GPU where there is one), cpu or cuda: where the float model and "
                                             "the attacks run; the chip (Lava, emulator) runs on the CPU.")


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Robust stable spiking neural networks, from training to Loihi.")


def parse_eps(text: str) -> float:
    """'8/255' or '0.031' -> a fraction in [0, 1]."""
    try:
        value = read_fraction(text)
    except ValueError:
        raise UserError(f"cannot read eps '{text}': write a fraction like 8/255 or a number like 0.03") from None
    return check_eps(value, written=text, error=UserError)


def check_limit(limit: Optional[int]) -> None:
    guards.integer("--limit", limit, 1)


_said = False  # whether the command's last line has been said (nobody else may add one)


def say(line: str) -> None:
    """The command's last line on stderr (an error or the interrupt): open progress bars end first. Under
    torchrun only rank 0 says it (every rank meets the same error or interrupt)."""
    global _said
    from .progress import close_all

    _said = True
    close_all()
    if sharding.is_main():
        typer.echo(line, err=True)


def report_interrupt(line: str) -> int:
    """Say the interrupt's line; the exit code: 130, or 143 where torchrun stopped this worker (there
    loihi-stable-torchrun may ask for silence, as it names the worker that failed)."""
    if interrupts.stopped_by_launcher():
        if not os.environ.get(QUIET_STOP):
            say(interrupts.message())
        return 143
    say(line)
    return 130


def friendly_errors(command):
    """Turn UserError into one line on stderr and exit code 2 (no traceback)."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        interrupts.install()
        keep_freed_memory()  # T-folded buffers reused, not page-faulted in again per step (allocator.py)
        try:
            result = command(*args, **kwargs)
            sharding.close()  # under torchrun: a process group left to the interpreter's exit can abort it
            return result
        except typer.Exit:
            raise
        except BaseException as err:  # noqa: BLE001  (after a Ctrl-C, whatever a library raised is the interrupt)
            if isinstance(err, KeyboardInterrupt) or interrupts.received():
                line = str(err) if isinstance(err, interrupts.Interrupted) else interrupts.message()
                raise typer.Exit(report_interrupt(line)) from None
            if isinstance(err, UserError):
                say(f"error: {err}")
                raise typer.Exit(2) from None
            raise
    return wrapper


@app.command()
@friendly_errors
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Best checkpoint (.pt); <out>.last.pt and <out>.metrics.* beside it."),
    dataset: str = typer.Option("digits", help="digits (embedded), mnist5k, fashion-mnist, cifar10, cifar100."),
    data_root: Optional[Path] = typer.Option(None, help="Folder of fashion-mnist IDX files or CIFAR (torchvision layout)."),
    arch: str = typer.Option("mlp", help="mlp, convnet (28x28), convnet-s (8x8), vgg5, vgg11, wrn16-4."),
    neuron: str = typer.Option("dlif", help="Spiking neuron: dlif or lif."),
    dlif_form: str = typer.Option("leak", help="DLIF's learned step scaling: leak (the paper's equation, "
                                               "v = lambda*a[t]*u + I; deployable) or input (the authors' code, "
                                               "v = lambda*u + p[t]*I; float only, not exportable)."),
    perturb: str = typer.Option("rfgsm", help="Training perturbation: none, gaussian, rfgsm (AT) or ibp (certified)."),
    train_eps: Optional[str] = typer.Option(None, "--train-eps",
                                            help="Training budget (default 4/255 rfgsm, 8/255 gaussian and ibp)."),
    rho: float = typer.Option(1.0, help="Weight of the MS-MPPD term."),
    chi: float = typer.Option(0.5, help="Mixup weight of the clean cross-entropy."),
    mppd_grad: str = typer.Option("both", help="MS-MPPD gradient through both branches (the term as written) "
                                               "or the perturbed branch only (the authors' code)."),
    stability_loss: str = typer.Option("ms-mppd", help="What rho weighs: ms-mppd (the paper), or the spike distances "
                                                       "tasad or std of the last spiking layer (its Table 2)."),
    rat: bool = typer.Option(False, "--rat", help="SNN-RAT regulariser after each step (weight decay 0)."),
    rat_beta: Optional[float] = typer.Option(None, help="RAT's beta (default as the paper: 0.0005 CIFAR-10 VGG11, "
                                                        "0.001 CIFAR-100 VGG11, 0.004 WRN16, else 0.001)."),
    epochs: int = typer.Option(30, help="Training epochs."),
    batch_size: int = typer.Option(64, help="Global batch size (split across torchrun processes)."),
    timesteps: int = typer.Option(8, help="Time steps T (direct encoding)."),
    hidden: str = typer.Option("128,64", help="Hidden layer sizes of the mlp, comma separated."),
    leak: float = typer.Option(0.99, help="Leak lambda of LIF/DLIF."),
    lr: float = typer.Option(0.1, help="SGD learning rate (cosine decay)."),
    limit: Optional[int] = typer.Option(None, help="Train on the first N samples only (smoke runs)."),
    val_size: Optional[int] = typer.Option(None, help="Training samples held out to choose the best checkpoint by "
                                                      "(default 10%, at most 5,000; 0: keep the last epoch)."),
    val_eps: str = typer.Option("8/255", help="Budget of the per-epoch PGD-10 accuracy (0 to skip)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from <out>.last.pt after an interruption."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = QUIET,
):
    """Train a LIF/DLIF SNN with MS-MPPD (mixup CE + rho * MS-MPPD); runs under torchrun too."""
    from .train_job import NetworkSettings, check_training, parse_hidden, train_to_files
    from .training import TrainConfig

    network = NetworkSettings(arch=arch, neuron=neuron, dlif_form=dlif_form, hidden=parse_hidden(hidden),
                              timesteps=timesteps, leak=leak)
    network.check(perturb)
    check_training(batch_size=batch_size, epochs=epochs, seed=seed, val_size=val_size, limit=limit, rho=rho, chi=chi,
                   lr=lr, rat_beta=rat_beta)
    config = TrainConfig(dataset=dataset, perturb=perturb, rho=rho, chi=chi, mppd_grad=mppd_grad,
                         stability_loss=stability_loss, epochs=epochs, lr=lr, seed=seed, batch_size=batch_size, rat=rat,
                         rat_beta=rat_beta, limit=limit, val_size=val_size, val_eps=parse_eps(val_eps),
                         data_root=str(data_root) if data_root else None,
                         train_eps=parse_eps(train_eps) if train_eps is not None else None)
    threads.configure(arch)
    for line in train_to_files(out, network, config, _device(device), resume=resume, progress=not quiet):
        typer.echo(line)


def _device(name: str):
    """'auto' -> the GPU where there is one; 'cuda' without one is a one-line error."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"unknown --device '{name}': choose auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible: use --device cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


@app.command()
@friendly_errors
def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint written by 'train'."),
    to: str = typer.Option("netx", "--to", help="Export format: netx."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (default: <checkpoint>.net)."),
    data_root: Optional[Path] = typer.Option(None, help="Folder of the data set, for a conv model's folding check."),
    quiet: bool = QUIET,
):
    """Export a checkpoint to NetX HDF5 with Loihi fixed-point quantization."""
    if to != "netx":
        raise UserError(f"unknown export format '{to}': only 'netx' is supported")
    from netx_export.compiler.export import export_checkpoint

    output = output or checkpoint.with_suffix(".net")
    guards.check_outputs({"--output": output}, [checkpoint])
    report = export_checkpoint(checkpoint, output, data_root=data_root, progress=not quiet)
    typer.echo(f"exported {checkpoint} -> {output} (NetX HDF5)")
    folding, stock = report.get("folding"), report.get("stock_netx")
    if folding:
        typer.echo(f"folded normalisation, BatchNorm and pooling into {folding['layers']} Loihi layers; on "
                   f"{folding['n']} test samples the folded float network agrees with the model on "
                   f"{100 * folding['folded_agreement']:.1f}% of predictions, its 8-bit version on "
                   f"{100 * folding['quantized_agreement']:.1f}% (accuracy {folding['model_accuracy']:.4f} -> "
                   f"{folding['quantized_accuracy']:.4f})")
    if stock and "unmeasured" in stock:
        typer.echo(f"DLIF: stock NetX reads one averaged vDecay per layer; its deviation is unmeasured "
                   f"({stock['unmeasured']})")
    elif stock:
        typer.echo(f"DLIF: stock NetX reads one averaged vDecay per layer, not the per-step schedule: on "
                   f"{stock['n']} test samples its predictions agree with 'run' on {100 * stock['agreement']:.1f}% "
                   f"(accuracy {stock['accuracy_run']:.4f} -> {stock['accuracy_stock_netx']:.4f}); "
                   f"'run' and --dlif-schedule host on Loihi2HwCfg use the schedule")


@app.command()
@friendly_errors
def run(
    network: Path = typer.Argument(..., help="NetX file written by 'export'."),
    backend: str = typer.Option("Loihi2SimCfg", help="Loihi2SimCfg (simulator), Loihi2HwCfg (Loihi 2) or emulator."),
    attack: str = CHIP_ATTACK,
    eps: str = typer.Option("8/255", help="Attack budget, L-inf, e.g. 8/255 or 0.03."),
    limit: Optional[int] = LIMIT,
    data_root: Optional[Path] = DATA_ROOT,
    transfer_from: Optional[Path] = typer.Option(None, help="Also craft the attack on this independently trained checkpoint."),
    json_out: Optional[Path] = JSON_OUT,
    dlif_schedule: Optional[str] = typer.Option(
        None, help="DLIF's per-step decay on Lava: 'process' (DLIFReset model; simulator default) or 'host' "
                   "(set between steps on stock LIF neurons; Loihi2HwCfg default, slower)."),
    batch_size: int = CHIP_BATCH,
    device: str = CHIP_SIDE_DEVICE,
    quiet: bool = QUIET,
):
    """Run an exported network on Lava and compare it with the float model; runs under torchrun too."""
    eps_value = parse_eps(eps)  # the checks that need no library first
    check_limit(limit)
    guards.integer("--batch-size", batch_size, 1, 1 << 20)
    guards.check_outputs({"--json": json_out}, [network, transfer_from])
    from netx_export.runtime.backends import check_backend
    from netx_export.analysis.deploy import compare
    from netx_export.runtime.lava_runner import resolve_dlif_schedule
    from netx_export.fileformat.netx_file import read_netx

    from .attacks.registry import suite_description
    from .io import write_json
    from .report import n_samples, table

    if backend != "emulator":
        resolve_dlif_schedule(backend, dlif_schedule)
    check_backend(backend)  # unknown backend or missing hardware libraries: fail before any work
    target = _device(device)
    spec = read_netx(network)
    threads.configure(spec.arch)
    sharding.init(target.type == "cuda")  # under torchrun: the batches are shared out, rank 0 reports
    source = None
    if transfer_from is not None:
        from netx_export.compiler.export import model_from_checkpoint

        from .io import load_checkpoint
        source = model_from_checkpoint(load_checkpoint(transfer_from))
        own = spec.checkpoint["model_config"]
        if (source.config.in_features, source.config.input_shape, source.config.classes) != \
                (own.get("in_features"), own.get("input_shape"), own.get("classes")):
            raise UserError(f"--transfer-from '{transfer_from}' takes other inputs or classes than '{network}': "
                            "give a checkpoint trained on the same data set")
    result = compare(spec, backend, attack, eps_value, limit, progress=not quiet, dlif_schedule=dlif_schedule,
                     data_root=data_root, transfer_from=source, device=target, batch_size=batch_size)
    if not sharding.is_main():
        return
    rows = [[name, r["accuracy_float"], r["accuracy_grid"], r["accuracy_chip"], r["agreement"]]
            for name, r in result["results"].items()]
    typer.echo(f"{spec.neuron.upper()} network {network} on {backend}, {result['n']} {spec.dataset} test samples, "
               f"T={spec.timesteps}" + (f", {attack.upper()} eps={result['eps_255']:g}/255" if attack != "none" else ""))
    if attack != "none":
        rows.append(["ROBUST (worst case)", result["robust_float"], result["robust_grid"], result["robust_chip"], ""])
    typer.echo(table(["inputs", "float acc", "grid acc", "chip acc", "agreement (grid/chip)"], rows))
    if attack != "none":
        typer.echo(f"ROBUST: per sample, correct on clean and on every set above ({attack}: {suite_description(attack)})")
        for name, report in result["contributions"].items():
            typer.echo(f"{name}: broken per attack (newly, in cascade order): "
                       + ", ".join(f"{a} {r['newly_broken']}" for a, r in report.items()))
    for note in result["diagnostics"]:
        typer.echo(f"warning: {note}")
    typer.echo(f"chip: {n_samples(len(result['sets']) * result['n'])} in {result['chip_seconds']:.1f} s on {backend} "
               f"({result['chip_samples_per_second']:.3g} samples/s)")
    if json_out is not None:
        write_json(json_out, result)


def _eps_list(text: str) -> list[float]:
    """'0,2,4,8,16' on the /255 scale -> fractions."""
    try:
        values = [read_fraction(v) / 255 for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"cannot read --sweep-eps '{text}': give values on the /255 scale like 0,2,4,8,16") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise UserError("--sweep-eps values must lie in [0, 255] (they are on the /255 scale)")
    return values


@app.command("eval")
@friendly_errors
def evaluate_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint written by 'train'."),
    suite: str = typer.Option("snn-adaptive", help="'snn-adaptive' (AutoAttack's cascade, then APGD-CE/DLR/T through "
                                                   "the spike backwards searched per model: worst case per sample), "
                                                   "'autoattack' (APGD-CE 100, APGD-T, FAB-T, Square 5000), 'fast', "
                                                   "'standard' (the paper's Table 1) or a JSON/YAML suite file."),
    attacks: Optional[str] = typer.Option(None, help="Comma-separated attacks, e.g. fgsm,pgd10,apgd-ce,apgd-t,square,"
                                                     "adaptive, or apgd-ce100@sigmoid:4 (through another spike backward)."),
    eps: str = typer.Option("8/255", help="L-inf budget, e.g. 8/255."),
    limit: Optional[int] = LIMIT,
    data_root: Optional[Path] = DATA_ROOT,
    json_out: Optional[Path] = JSON_OUT,
    plot: Optional[Path] = typer.Option(None, help="Write a PNG of the results."),
    sweep_eps: Optional[str] = typer.Option(None, help="PGD-10 sweep over eps on the /255 scale, e.g. 0,2,4,8,16."),
    batch_size: int = typer.Option(512, help="Samples attacked at once (under torchrun, the unit shared out)."),
    device: str = typer.Option("auto", help="auto (a GPU where there is one), cpu or cuda: where the attacks run, batched."),
    quiet: bool = QUIET,
):
    """Robust accuracy: the worst case per sample over an attack suite, each attack's accuracy, per-layer MS-MPPD."""
    from netx_export.compiler.export import model_from_checkpoint

    from .attacks import CASCADE_SUITES, load_suite
    from .attacks.registry import suite_description
    from .data import Split, checkpoint_test_split
    from .evaluation import build_attacks, evaluate, masking_diagnostics, sweep_eps as run_sweep
    from .io import load_checkpoint, write_json
    from .plots import plot_evaluation, plot_sweep
    from .report import table

    eps_value = parse_eps(eps)
    sweep = _eps_list(sweep_eps) if sweep_eps else None
    guards.integer("--batch-size", batch_size, 1, 1 << 20)
    check_limit(limit)
    guards.check_outputs({"--json": json_out, "--plot": plot}, [checkpoint])
    specs = [a.strip() for a in attacks.split(",") if a.strip()] if attacks else load_suite(suite)
    target = _device(device)
    sharding.init(target.type == "cuda")  # under torchrun: the batches are shared out, rank 0 reports
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload).to(target)
    threads.configure(model.config.arch)
    train_cfg = payload.get("train_config", {})
    test = checkpoint_test_split(payload, data_root, limit)
    test = Split(test.x.to(target), test.y.to(target))
    label = (f"{model.config.neuron.upper()}, {train_cfg.get('dataset', '?')}, "
             f"{train_cfg.get('perturb', '?')}, rho={train_cfg.get('rho', '?')}")
    cascade = attacks is None and suite in CASCADE_SUITES
    suite_name = "attacks " + ",".join(map(str, specs)) if attacks else f"suite {suite}"
    output: dict = {"model": label, "eps": eps_value, "eps_255": round(eps_value * 255, 4), "suite": suite_name,
                    "cascade": cascade}
    if sweep is None:
        built = build_attacks(model, specs, eps_value)
        result = evaluate(model, test, built, batch_size=batch_size, progress=not quiet, cascade=cascade)
        result["diagnostics"] = masking_diagnostics(model, test, result, built, cascade)
        if not sharding.is_main():
            return
        names = [n for n, v in result.items() if isinstance(v, float)]
        typer.echo(f"{label}: {result['n']} test samples, eps={eps_value * 255:g}/255, T={model.config.timesteps}; "
                   f"ROBUST = worst case per sample over {suite_name}"
                   + (f" ({suite_description(suite)})" if not attacks else "")
                   + ("; each attack ran on what the previous left robust (its column: accuracy after it)"
                      if cascade else ""))
        typer.echo(table(["Model", *["Clean" if n == "clean" else n.upper() for n in names]],
                         [[label, *[f"{100 * result[n]:.2f}" for n in names]]]))
        typer.echo("\nper-layer MS-MPPD (mean of eps[t]^2 over samples, neurons, time):")
        n_layers = len(model.spiking_neurons)
        typer.echo(table(["attack", *[f"layer {i + 1}" for i in range(n_layers)]],
                         [[a, *[f"{m['ms_mppd']:.4g}" for m in layers]] for a, layers in result["layers"].items()]))
        if "contributions" in result:
            typer.echo("broken per attack (newly, in cascade order): "
                       + ", ".join(f"{a} {r['newly_broken']}" for a, r in result["contributions"].items()))
        for note in result["diagnostics"]:
            typer.echo(f"warning: {note}")
        output.update(result)
        if plot:
            plot_evaluation(result, plot, title=label)
    else:
        rows = run_sweep(model, test, sweep, progress=not quiet)
        if not sharding.is_main():
            return
        typer.echo(f"{label}: PGD-10 eps sweep on {len(test)} test samples")
        typer.echo(table(["eps (/255)", "accuracy", *[f"MS-MPPD L{i + 1}" for i in range(len(rows[0]["ms_mppd"]))]],
                         [[f"{r['eps_255']:g}", r["accuracy"], *[f"{v:.4g}" for v in r["ms_mppd"]]] for r in rows]))
        output["sweep"] = rows
        if plot:
            plot_sweep(rows, plot, title=label)
    if json_out is not None:
        write_json(json_out, output)


@app.command("check")
@friendly_errors
def check_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint written by 'train'."),
    network: Optional[Path] = typer.Argument(None, help="Its NetX export (default: exported on the fly)."),
    attack: str = CHIP_ATTACK,
    eps: str = typer.Option("8/255", help="L-inf budget, e.g. 8/255."),
    backend: str = typer.Option("emulator", help="emulator, or Loihi2SimCfg (then also checked against the emulator)."),
    limit: Optional[int] = LIMIT,
    data_root: Optional[Path] = DATA_ROOT,
    ratio_threshold: float = typer.Option(1.5, help="Flag layers whose chip/float MS-MPPD ratio exceeds this."),
    json_out: Optional[Path] = JSON_OUT,
    plot: Optional[Path] = typer.Option(None, help="Write a PNG (perturbation traces and per-layer bars)."),
    batch_size: int = CHIP_BATCH,
    device: str = CHIP_SIDE_DEVICE,
    quiet: bool = QUIET,
):
    """Compare membrane potential perturbations and accuracy of the float model and the chip; runs under torchrun too."""
    from netx_export.runtime.backends import check_backend
    from netx_export.analysis.checker import check, plot_check
    from netx_export.compiler.export import model_from_checkpoint, spec_for

    from .attacks import CASCADE_SUITES

    from .data import checkpoint_test_split
    from .io import load_checkpoint, write_json
    from .report import table

    eps_value = parse_eps(eps)
    check_backend(backend)
    check_limit(limit)
    guards.number("--ratio-threshold", ratio_threshold, 0.0, 1e6, low_open=True, fix="e.g. 1.5")
    guards.integer("--batch-size", batch_size, 1, 1 << 20)
    guards.check_outputs({"--json": json_out, "--plot": plot}, [checkpoint, network])
    target = _device(device)
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload)
    threads.configure(model.config.arch)
    sharding.init(target.type == "cuda")  # under torchrun: the batches are shared out, rank 0 reports
    spec = spec_for(model, payload, network)
    test = checkpoint_test_split(payload, data_root, limit)
    result = check(model, spec, test.x, test.y, attack, eps_value, backend, ratio_threshold, progress=not quiet,
                   device=target, batch_size=batch_size)
    if not sharding.is_main():
        return
    typer.echo(f"{spec.neuron.upper()} {checkpoint} vs chip ({backend}), {attack.upper()} eps={eps_value * 255:g}/255, "
               f"{result['n']} samples")
    typer.echo(table(["layer", "MS-MPPD float", "MS-MPPD chip", "ratio", "correlation", "spike agreement", "flag"],
                     [[l["layer"], f"{l['ms_mppd_float']:.4g}", f"{l['ms_mppd_chip']:.4g}", f"{l['ratio']:.3f}",
                       f"{l['correlation']:.3f}", l["spike_agreement"], "AMPLIFIED" if l["amplified"] else "ok"]
                      for l in result["layers"]]))
    acc = result["accuracy"]
    typer.echo(table(["inputs", "float acc", "chip acc", "gap"],
                     [["clean", acc["float_clean"], acc["chip_clean"], f"{acc['gap_clean'] + 0.0:+.4f}"],
                      [attack + (" (worst case)" if attack in CASCADE_SUITES else ""), acc["float_adv"],
                       acc["chip_adv"], f"{acc['gap_adv'] + 0.0:+.4f}"]]))
    if "emulator_matches_chip" in result:
        typer.echo(f"emulator matches {backend} bit for bit: {result['emulator_matches_chip']}")
    if plot:
        plot_check(result, plot, title=f"{spec.neuron.upper()}: float vs chip, {attack} {eps_value * 255:g}/255")
    if json_out is not None:
        write_json(json_out, {k: v for k, v in result.items() if not k.startswith("_")})


@app.command("certify")
@friendly_errors
def certify_command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint written by 'train'."),
    network: Optional[Path] = typer.Argument(None, help="Its NetX export for the on-chip certificate "
                                                        "(default: exported on the fly)."),
    eps: str = typer.Option("2/255", help="L-inf radius to certify, e.g. 2/255."),
    method: str = typer.Option("both", help="ibp (S-IBP), crown (S-CROWN) or both (the better bound per margin)."),
    chip: bool = typer.Option(True, help="Also certify the exported integer model (what Loihi runs)."),
    points: int = typer.Option(8, help="Random points per ball run on the emulator to check the chip bounds."),
    crown_steps: int = typer.Option(20, help="alpha-CROWN steps optimising S-CROWN's relaxation slopes (0: fixed slopes)."),
    tighten: bool = typer.Option(False, "--tighten", help="S-CROWN intersects every voltage (layers up to 256 neurons) "
                                                          "with its own S-CROWN bound first: tighter, about 10x slower."),
    batch_size: int = typer.Option(128, help="Samples bounded at once (lower it for large conv networks)."),
    device: str = typer.Option("auto", help="auto (a GPU where there is one), cpu or cuda: where bounds and attacks run; "
                                            "the chip certificate runs on the CPU."),
    limit: Optional[int] = LIMIT,
    data_root: Optional[Path] = DATA_ROOT,
    json_out: Optional[Path] = JSON_OUT,
    quiet: bool = QUIET,
):
    """Verified accuracy (S-IBP / S-CROWN) next to clean and PGD accuracy, for the float model and the chip."""
    from netx_export.compiler.export import model_from_checkpoint, spec_for

    from .certify import certify
    from .data import checkpoint_test_split
    from .io import load_checkpoint, write_json
    from .report import table

    eps_value = parse_eps(eps)
    check_limit(limit)
    guards.integer("--points", points, 0, 100_000)
    guards.check_outputs({"--json": json_out}, [checkpoint, network])
    payload = load_checkpoint(checkpoint)
    model = model_from_checkpoint(payload)
    threads.configure(model.config.arch)
    dense = model.config.arch == "mlp"
    if model.config.dlif_form != "leak":
        raise UserError("S-IBP, S-CROWN and the chip certificate bound the leak-form DLIF only; this checkpoint has an "
                        "input-form DLIF: certify a model trained with --dlif-form leak (or --neuron lif)")
    if not dense and not hasattr(model, "layout"):
        raise UserError(f"S-IBP and S-CROWN bound MLPs and the VGG family (convnet-s, convnet, vgg5, vgg11); "
                        f"{model.config.arch} has an analog residual stream and no Loihi export")
    guards.integer("--crown-steps", crown_steps, 0, 10_000)
    guards.integer("--batch-size", batch_size, 1, 1 << 16)
    target = _device(device)
    sharding.init(target.type == "cuda")  # under torchrun: the batches are shared out, rank 0 reports
    spec = spec_for(model, payload, network) if chip else None
    test = checkpoint_test_split(payload, data_root, limit)
    chip_model = None
    if not dense and spec is not None:
        from netx_export.analysis.chip_model import grid_model

        chip_model = grid_model(spec, model).to(target)  # clean and PGD of what the chip runs
    from netx_export.analysis.chip_certificate import certifier

    result = certify(model.to(target), test.x.to(target), test.y.to(target), eps_value, method,
                     chip_certificate=certifier(spec, points) if spec is not None else None,
                     progress=not quiet, crown_steps=crown_steps, chip_model=chip_model,
                     batch_size=batch_size, tighten=tighten)
    if not sharding.is_main():
        return
    train_cfg = payload.get("train_config", {})
    config = payload["model_config"]
    typer.echo(f"{str(config.get('neuron')).upper()} {checkpoint} (trained with {train_cfg.get('perturb', '?')}), "
               f"{result['n']} test samples, eps={eps_value * 255:g}/255, T={config.get('timesteps')}; "
               f"S-IBP/S-CROWN bound the {'chip-arithmetic' if dense else 'float'} model, 'verified' takes the "
               f"better bound per margin" + ("" if chip_model is None else "; the chip's clean/PGD are its grid model's"))
    float_columns = [*(["ibp"] if method != "crown" else []), *(["crown"] if method != "ibp" else []), "verified"]
    columns = ["clean", "pgd", *float_columns,
               *(["clean_chip", "pgd_chip"] if chip_model is not None else []),
               *(["verified_chip"] if spec is not None else [])]
    names = {"clean": "clean", "pgd": "PGD-10", "ibp": "S-IBP", "crown": "S-CROWN", "verified": "verified",
             "clean_chip": "clean (chip)", "pgd_chip": "PGD-10 (chip)", "verified_chip": "verified on chip"}
    typer.echo(table([names[c] for c in columns], [[f"{100 * result[c]:.2f}" for c in columns]]))
    broken = result.get("verified_but_broken_by_pgd", 0) + result.get("verified_chip_but_broken_by_pgd", 0)
    typer.echo(f"verified samples broken by PGD: {broken} (must be 0)")
    if "chip_check" in result:
        check = result["chip_check"]
        typer.echo(f"chip bounds hold on {check['points_per_sample']} random points per ball (emulator): "
                   f"{check['readouts_inside_bounds']}; verified samples broken there: "
                   f"{check['verified_samples_broken']}")
    if json_out is not None:
        write_json(json_out, {k: v for k, v in result.items() if not k.startswith("_")})


def main() -> None:
    """The console script: after the command, a late Ctrl-C (during interpreter shutdown) changes nothing."""
    import signal

    try:
        code = app(prog_name="loihi-stable", standalone_mode=False)
    except KeyboardInterrupt:  # between the command's end and here
        say(interrupts.message())
        code = 130
    finally:
        while True:  # signal.signal is Python code: a Ctrl-C can land inside it, and is as late as any other
            try:
                if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                break
            except KeyboardInterrupt:
                pass
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
