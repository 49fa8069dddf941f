r"""The `flowlearn` command line.

* `flowlearn check` runs the Jacobian checker over every built-in layer on small random inputs
  and prints one row per layer, shape and dtype.
* `flowlearn irn ...` downscales, upscales, evaluates and trains Invertible Rescaling Nets.
* `flowlearn demo [IMAGE]` rescales a photo with the shipped IRN models and bicubic, side by side.

Every failure is one line on stderr, `flowlearn <command>: error: <what>; <what to do>`, and a
non-zero exit status (1; 2 for a bad command line); Ctrl-C prints `interrupted` and exits with
130. The hidden option `--debug` (anywhere on the command line) or the environment variable
`FLOWLEARN_DEBUG=1` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

import torch

from flowlearn.checks import check_bijector, jitter_parameters
from flowlearn.core import Bijector

__all__ = ["builtin_cases", "main", "run_checks"]

Case = tuple[str, Callable[[], Bijector], tuple[int, ...]]


def builtin_cases() -> list[Case]:
    """Every built-in layer with a small input shape: `(name, make_layer, input_shape)`.

    Freshly built couplings are the identity, so `run_checks` jitters their weights first.
    """
    from flowlearn.core import FlowSequential
    from flowlearn.irn import IRN, IRNCoupling
    from flowlearn.layers import nets
    from flowlearn.layers.glow import ActNorm, InvertibleConv1x1
    from flowlearn.layers.haar import HaarDownsampling
    from flowlearn.layers.nice import AdditiveCoupling, DiagonalScaling
    from flowlearn.layers.permutations import Reverse, Shuffle
    from flowlearn.layers.realnvp import AffineCoupling
    from flowlearn.layers.spline import SplineCoupling
    from flowlearn.layers.squeeze import Squeeze

    mlp, conv = nets.mlp(hidden=16), nets.conv_net(hidden=8)
    return [
        ("AdditiveCoupling(channel)", lambda: AdditiveCoupling(5, mlp), (3, 5)),
        ("AdditiveCoupling(checkerboard)", lambda: AdditiveCoupling(3, conv, mask="checkerboard"),
         (2, 3, 4, 6)),
        ("DiagonalScaling", lambda: DiagonalScaling(5), (3, 5)),
        ("AffineCoupling(channel)", lambda: AffineCoupling(5, mlp, parity=1), (3, 5)),
        ("AffineCoupling(channel, image)", lambda: AffineCoupling(3, conv), (2, 3, 4, 6)),
        ("AffineCoupling(checkerboard)", lambda: AffineCoupling(3, conv, mask="checkerboard"),
         (2, 3, 4, 6)),
        ("Reverse", Reverse, (3, 5)),
        ("Shuffle", lambda: Shuffle(5, seed=1), (3, 5)),
        ("ActNorm", lambda: ActNorm(3), (2, 3, 4, 6)),
        ("InvertibleConv1x1", lambda: InvertibleConv1x1(3), (2, 3, 4, 6)),
        ("Squeeze", Squeeze, (2, 3, 4, 6)),
        ("HaarDownsampling(orthonormal)", lambda: HaarDownsampling(3), (2, 3, 4, 6)),
        ("HaarDownsampling(mean)", lambda: HaarDownsampling(3, normalization="mean"),
         (2, 3, 4, 6)),
        ("SplineCoupling(channel)", lambda: SplineCoupling(5, mlp, bins=4, bound=2.0), (3, 5)),
        ("SplineCoupling(channel, image)", lambda: SplineCoupling(3, conv, bins=4, bound=2.0),
         (2, 3, 4, 6)),
        ("SplineCoupling(checkerboard)", lambda: SplineCoupling(
            3, conv, mask="checkerboard", parity=1, bins=4, bound=2.0), (2, 3, 4, 6)),
        ("IRNCoupling", lambda: IRNCoupling(12, nets.dense_block(growth=8)), (2, 12, 2, 2)),
        ("IRN(x2, 2 blocks)", lambda: IRN(2, blocks=[2], growth=8), (2, 3, 4, 4)),
        ("FlowSequential(RealNVP step)", lambda: FlowSequential(
            AffineCoupling(3, conv, mask="checkerboard"), Squeeze(),
            AffineCoupling(12, conv), InvertibleConv1x1(12)), (2, 3, 4, 4)),
    ]  # fmt: skip


def run_checks(dtypes: Sequence[torch.dtype] = (torch.float64, torch.float32)) -> list[list[str]]:
    """Check every built-in layer; return table rows (layer, shape, dtype, errors, verdict)."""
    rows = []
    for name, make, shape in builtin_cases():
        for dtype in dtypes:
            torch.manual_seed(0)
            layer = make().to(dtype)
            jitter_parameters(layer, scale=0.05, seed=0)
            x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
            report = check_bijector(layer, x)
            rows.append([
                name,
                "×".join(map(str, shape)),
                report.dtype,
                f"{max(report.roundtrip_error, report.inverse_roundtrip_error):.1e}",
                "-" if report.logdet_error is None else f"{report.logdet_error:.1e}",
                "pass" if report.ok else "FAIL: " + "; ".join(report.failures),
            ])  # fmt: skip
    return rows


def _format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cmd_check(args: argparse.Namespace) -> int:
    dtypes = {"float64": [torch.float64], "float32": [torch.float32]}.get(
        args.dtype, [torch.float64, torch.float32]
    )
    rows = run_checks(dtypes)
    header = ["layer", "shape", "dtype", "round trip", "log-det err", "verdict"]
    print(_format_table(header, rows))
    failed = sum(not r[-1].startswith("pass") for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `flowlearn` command."""
    parser = argparse.ArgumentParser(
        prog="flowlearn", description="Normalizing flows you can read, run and trust."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "check", help="check every built-in layer against a brute-force Jacobian"
    )
    check.add_argument("--dtype", choices=["float64", "float32", "both"], default="both")
    check.set_defaults(func=_cmd_check)

    from flowlearn.irn import cli as irn_cli

    irn_cli.register(sub)

    from flowlearn.irn import demo

    demo_parser = sub.add_parser(
        "demo",
        help="rescale a photo with the shipped IRN models and bicubic, side by side",
        description="Downscale a photo with the shipped IRN models, upscale it back from the "
        "LR alone, compare with bicubic (PSNR/SSIM table) and write demo.png.",
    )
    demo.add_arguments(demo_parser)
    return parser


EXIT_INTERRUPTED = 130
r"""The exit status after Ctrl-C (128 + SIGINT, as shells report it)."""


def _command_name(args: argparse.Namespace) -> str:
    words = ["flowlearn", args.command]
    if getattr(args, "irn_command", None):
        words.append(args.irn_command)
    return " ".join(words)


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flowlearn` console script; returns the exit status.

    Errors become one line on stderr and exit status 1; Ctrl-C exits with `EXIT_INTERRUPTED`.
    With `--debug` among the arguments or `FLOWLEARN_DEBUG=1` they are raised as they are.
    """
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words or os.environ.get("FLOWLEARN_DEBUG", "") not in ("", "0")
    words = [w for w in words if w != "--debug"]
    previous = os.environ.get("FLOWLEARN_DEBUG")
    if debug:  # for the subcommands that report their own errors
        os.environ["FLOWLEARN_DEBUG"] = "1"
    name = "flowlearn"
    try:
        args = build_parser().parse_args(words)
        name = _command_name(args)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except KeyboardInterrupt as err:
        if debug:
            raise
        detail = _one_line(err)
        print(f"{name}: interrupted" + (f" ({detail})" if detail else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug:
            raise
        what = _one_line(err) or type(err).__name__
        if not isinstance(err, (ValueError, OSError, RuntimeError)):
            what = f"{type(err).__name__}: {what}"
        print(
            f"{name}: error: {what}; run again with --debug to see where it happened",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is None:
            os.environ.pop("FLOWLEARN_DEBUG", None)
        else:
            os.environ["FLOWLEARN_DEBUG"] = previous


def run() -> None:
    """Console-script entry: `main`, then exit with its status.

    Once the command has returned, its outputs are written; a Ctrl-C that arrives during the
    interpreter's shutdown is ignored, so the exit status stays the command's own (without
    this, Python restores the default handler while shutting down and the signal would kill
    the process, status -2, after a successful run).
    """
    try:
        status = main()
    except KeyboardInterrupt:  # between the command's return and the line below
        print("flowlearn: interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    finally:  # also after argparse's own exits (--help, usage errors)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    run()
