"""The ``dynamics`` command line.

Every fault is one line on stderr:

* exit 2, ``dynamics: error: ...``: a problem with what was asked (unknown experiment, bad key or
  value, missing or corrupt data, a directory this program may not write, a full disk), reported
  before any result file is touched;
* exit 3, ``dynamics: internal error: ...``: a bug; ``dynamics --debug ...`` shows the traceback;
* exit 1 is ``verify``'s "a claim failed", 130 an interrupt (Ctrl-C), 143 SIGTERM and 129 SIGHUP: each stops
  the worker pool at once and keeps every finished cell.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

import click

from .errors import ENVIRONMENT_ERRNOS, UserError
from .paths import ENV_RESULTS, readme_path, results_root, runs_root

# One vocabulary: --dir is one experiment's result directory (alias --out on run and sweep), and
# --results the results root, which defaults to $DYNAMICS_RESULTS or the project's results/
# (found from the installed checkout, not from the current directory).
_RESULTS_HELP = f"Results root [default: ${ENV_RESULTS}, else the project's results/]."


def _results_option(fn):
    return click.option("--results", "results", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=_RESULTS_HELP)(fn)


def _experiment(name: str):
    from . import experiments

    return experiments.get(name)


EXIT_USER, EXIT_INTERNAL = 2, 3
_DEBUG = {"on": False}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dynamics")
@click.option("--debug", is_flag=True, help="Show the full traceback of an internal error (exit code 3).")
def cli(debug: bool) -> None:
    """Simulate attention training dynamics and depth efficiency, next to the papers' closed forms.

    \b
    Typical session:
      dynamics list                          experiments and what they reproduce
      dynamics describe scan-snap-fig6       config keys, defaults and the default grid
      dynamics run scan-snap-fig6 --quick    a small version in seconds, into runs/scan-snap-fig6/
      dynamics run scan-snap-fig6            the full reproduction into results/scan-snap-fig6/
      dynamics verify                        every claim, PASS or FAIL, into results/VERIFICATION.md
      dynamics report                        one HTML page with every table, figure and verdict

    Errors are one line: exit 2 for a problem with the input, 3 for an internal error
    (`dynamics --debug ...` shows its traceback).
    """
    _DEBUG["on"] = _DEBUG["on"] or debug


@cli.command("list")
@_results_option
def list_cmd(results) -> None:
    """List the experiments, the paper result each reproduces, and whether results exist."""
    from . import experiments

    root = results_root(results)
    for name in experiments.names():
        exp = experiments.get(name)
        have = "results" if (root / name / "table.csv").exists() else "-"
        click.echo(f"{name:24s} {have:8s} {exp.summary}  [{exp.reference}]")


def _key_lines(exp) -> list[str]:
    """EXP's config keys, one line each (qualified name, type, default, help), each spec's own line first."""
    from .config import describe as fields
    from .config import keys, short_name

    specs = {name: k for name, k in keys(exp.config).items() if k.spec}
    lines = []
    if specs:
        lines.append("(a key inside a spec is written spec.key; marked *: the part after the last dot alone is "
                     "accepted too, as no other key has that name)")
    for name, tp, default, text in fields(exp.config):
        parts = name.split(".")
        for spec in (".".join(parts[:i]) for i in range(1, len(parts))):
            if spec in specs:  # a spec's own line, before its first key
                k = specs.pop(spec)
                lines.append(f"{spec + '.':32s} {k.type.__name__} spec: {k.help}")
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        mark = "*" if "." in name and "." not in short_name(exp.config, name) else ""
        lines.append(f"{name + mark:32s} {tp:24s} default {shown!s:12s} {text}")
    return lines


class _ExperimentCommand(click.Command):
    """`run`/`sweep`: `dynamics run EXP --help` also lists EXP's config keys.

    Click answers --help while parsing, before EXP is bound, so the name is picked out of the raw
    arguments here (the first one that names an experiment; a --set value never does).
    """

    def parse_args(self, ctx, args):
        from . import experiments

        names = set(experiments.names())
        ctx.meta["dynamics.experiment"] = next((a for a in args if a in names), None)
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)
        name = ctx.meta.get("dynamics.experiment")
        if name:
            formatter.write_paragraph()
            formatter.write_text(f"Config keys of {name} (--set key=value; `dynamics describe {name}` "
                                 "also shows the default grid and --quick):")
            with formatter.indentation():
                for line in _key_lines(_experiment(name)):
                    formatter.write(" " * formatter.current_indent + line + "\n")


@cli.command()
@click.argument("experiment")
def describe(experiment: str) -> None:
    """Show EXPERIMENT's config keys (type, default, meaning), default grid and --quick settings."""
    exp = _experiment(experiment)
    click.echo(f"{exp.name}: {exp.summary}\nreproduces: {exp.reference}\n\nconfig keys (--set key=value):")
    for line in _key_lines(exp):
        click.echo("  " + line)
    if exp.grid:
        click.echo("\ndefault grid (replace with --grid key=v1,v2 on `dynamics sweep`):")
        for k, v in exp.grid.items():
            click.echo(f"  {k} = {','.join(map(str, v))}")
    if exp.quick or exp.quick_grid:
        click.echo("\n--quick sets: " + ", ".join(f"{k}={v}" for k, v in {**exp.quick, **exp.quick_grid}.items()))


def _run_options(fn):
    fn = click.option("--dir", "--out", "out", type=click.Path(path_type=Path), default=None,
                      help="Result directory [default: <results>/EXP for `run` with the default config; runs/EXP "
                           "with --quick, --set, --seeds, and for `sweep`].  Reused only when it holds this "
                           "experiment's results; refused when it holds files this program did not write.")(fn)
    fn = _results_option(fn)
    fn = click.option("--max-cells", type=int, default=None,
                      help="Refuse grids with more cells [default: $DYNAMICS_MAX_CELLS or 10000].")(fn)
    fn = click.option("--max-work", type=float, default=None,
                      help="Refuse runs estimated at more than this many times the default run's work "
                           "[default: $DYNAMICS_MAX_WORK or 1000].")(fn)
    fn = click.option("--threads", type=int, default=None,
                      help="torch threads per worker process when batches run in parallel [default: 1]; "
                           "with one worker, the threads of this process [default: torch's].")(fn)
    fn = click.option("--dask-tls", nargs=3, type=click.Path(dir_okay=False, path_type=Path), default=None,
                      metavar="CA CERT KEY",
                      help="TLS for --executor dask: CA certificate, client certificate and key (PEM); "
                           "the address must then be tls://HOST:PORT.")(fn)
    fn = click.option("--resume", is_flag=True, help="Skip cells already finished in the result directory.")(fn)
    fn = click.option("--seeds", type=int, default=None, help="Seeds per cell (sets the `seeds` key).")(fn)
    fn = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                      help="Override a config key; repeatable. A key inside a spec is spec.key (data.num_last=3), "
                           "or its bare name where that is unique. `dynamics run EXP --help` lists the keys.")(fn)
    fn = click.option("--quick", is_flag=True, help="The experiment's small configuration (CI-sized).")(fn)
    fn = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                      help="WikiText directory for experiments that read text [default: $DYNAMICS_WIKITEXT].")(fn)
    fn = click.option("--no-wait", is_flag=True,
                      help="Fail instead of waiting when another run is writing the same directory.")(fn)
    fn = click.option("--workers", type=int, default=None,
                      help="local: worker processes for independent batches [default: all cores when there are at "
                           "least two batches per core, else 1 = in-process]. "
                           "dask: torch threads per task [default: 1].")(fn)
    fn = click.option("--address", default=None, metavar="tcp://HOST:PORT",
                      help="Dask scheduler address (with --executor dask).")(fn)
    fn = click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                      help="local: batches in a process pool on this machine, each batch one tensor program over "
                           "many runs; dask: batches sent to a Dask distributed cluster.")(fn)
    return fn


def _do_run(experiment, grid_items, quick, sets, seeds, out, resume, executor, address, workers, no_wait,
            data_dir, default_root, max_cells=None, max_work=None, threads=None, dask_tls=None):
    default_root = Path(default_root)
    from .config import parse_assignments
    from .sweep import runner
    from .sweep.executors import make_executor
    from .sweep.grid import parse_grid

    exp = _experiment(experiment)
    overrides = parse_assignments(sets)
    if seeds is not None:
        if seeds < 1:
            raise UserError(f"--seeds must be at least 1, got {seeds}")
        overrides["seeds"] = str(seeds)
    if data_dir is not None:
        from .config import resolve

        try:
            resolve(exp.config, "data_dir")
        except UserError:
            raise UserError(f"{exp.name} reads no data: --data-dir does not apply") from None
        overrides["data_dir"] = str(data_dir)
    for name, value in (("--max-cells", max_cells), ("--max-work", max_work), ("--threads", threads)):
        if value is not None and not value >= 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    grid = parse_grid(exp.config, list(grid_items))
    p = runner.plan(exp, overrides, grid, quick=quick, max_cells=max_cells, max_work=max_work)
    if out is None:
        # results/ holds the committed reproduction: only the default config goes there
        custom = quick or sets or seeds is not None or grid_items
        out = (runs_root() if custom else default_root) / exp.name
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if executor == "local" and workers is None:
        workers = exp.local_workers
    pool = make_executor(executor, address, workers, threads=threads, tls=dask_tls)
    root = runner.execute(p, out, resume=resume, executor=pool, argv=sys.argv, wait=not no_wait)
    click.echo(f"{exp.name}: {len(p.ids)} cells -> {root}")
    claims = root / "claims.csv"
    if claims.exists():
        from .sweep.store import read_csv_checked, read_manifest

        entry = read_manifest(root / "manifest.json").get("files", {}).get("claims.csv")
        table = read_csv_checked(claims, entry)
        if len(table) and "verdict" in table.columns:
            def counts(kind: str) -> str:
                v = table[table.kind == kind].verdict.value_counts()
                return ", ".join(f"{v[k]} {k}" for k in ("PASS", "FAIL", "INCONCLUSIVE") if k in v) or "none"

            extra = f"; exploratory {counts('exploratory')}" if (table.kind == "exploratory").any() else ""
            click.echo(f"claims: reproductions {counts('reproduction')}; consistency {counts('consistency')}{extra} "
                       f"(details: dynamics verify {exp.name})")


@cli.command(cls=_ExperimentCommand)
@click.argument("experiment")
@_run_options
def run(experiment, quick, sets, seeds, out, resume, executor, address, workers, no_wait, data_dir, max_cells,
        max_work, threads, dask_tls, results) -> None:
    """Run EXPERIMENT over its default grid and write tables, figures, claims and a manifest.

    With the default config, results go to results/EXPERIMENT/ (the committed reproduction); with
    --quick, --set or --seeds they go to runs/EXPERIMENT/, unless --dir is given.  Same seeds on the
    same machine give an identical table.
    """
    _do_run(experiment, [], quick, sets, seeds, out, resume, executor, address, workers, no_wait, data_dir,
            results_root(results), max_cells, max_work, threads, dask_tls)


@cli.command(cls=_ExperimentCommand)
@click.argument("experiment")
@click.option("--grid", "grid_items", multiple=True, metavar="KEY=V1,V2",
              help="Sweep KEY over the listed values; repeatable (replaces that key in the default grid).")
@_run_options
def sweep(experiment, grid_items, quick, sets, seeds, out, resume, executor, address, workers, no_wait,
          data_dir, max_cells, max_work, threads, dask_tls, results) -> None:
    """Run EXPERIMENT over a grid of config values (cells), one result table for the whole grid.

    Sweeps write to runs/EXPERIMENT/ by default so the committed results/ are not overwritten;
    pass --dir results/EXPERIMENT to replace them.  Example:

        dynamics sweep scan-snap-fig6 --grid eta_z=0.5,1 --grid ratio=1,10 --seeds 3
    """
    _do_run(experiment, grid_items, quick, sets, seeds, out, resume, executor, address, workers, no_wait,
            data_dir, runs_root(), max_cells, max_work, threads, dask_tls)


@cli.command()
@click.argument("experiment", nargs=-1)
@_results_option
def reproduce(experiment, results) -> None:
    """Run each EXPERIMENT (default: all) with its default config into the results root, one after the
    other, printing which one runs, the time elapsed and an ETA taken from the last full runs' times.

    This is what `make reproduce` calls; `dynamics run EXP` is the same for one experiment.
    """
    import time

    from . import experiments

    names = list(experiment) or experiments.names()
    for name in names:
        experiments.get(name)  # unknown names fail before anything runs
    root = results_root(results)
    expected = {name: _last_full_time(root / name) for name in names}
    started = time.time()
    for i, name in enumerate(names, 1):
        left = [expected[n] for n in names[i - 1:]]
        eta = "unknown" if any(t is None for t in left) else _clock(sum(left))
        click.echo(f"== [{i}/{len(names)}] {name}: elapsed {_clock(time.time() - started)}, ETA {eta} "
                   "(from the last full runs)", err=True)
        _do_run(name, [], False, (), None, None, False, "local", None, None, False, None, root)
    click.echo(f"== {len(names)} experiments in {_clock(time.time() - started)}", err=True)


def _last_full_time(directory: Path) -> float | None:
    """Wall time of the last full, unresumed run saved in ``directory`` (None if unknown)."""
    import json

    try:
        m = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if m.get("quick") or m.get("resumed_cells"):
        return None
    t = m.get("wall_time_s")
    return float(t) if isinstance(t, (int, float)) else None


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _store(experiment: str, directory: Path | None, results: Path | None = None):
    from .sweep.store import Store

    exp = _experiment(experiment)
    store = Store(directory or results_root(results) / exp.name, exp.name)
    manifest = store.manifest() if store.root.is_dir() else None
    if manifest is not None and manifest["experiment"] != exp.name:
        raise UserError(f"{store.root} holds results of {manifest['experiment']!r}, not {exp.name!r}")
    return store


@cli.command()
@click.argument("experiment")
@click.option("--format", "fmt", type=click.Choice(["csv", "md"]), default="md", show_default=True)
@click.option("--dir", "--out", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Result directory [default: <results>/EXPERIMENT].")
@_results_option
def table(experiment, fmt, directory, results) -> None:
    """Print EXPERIMENT's saved main table as CSV or Markdown."""
    from .sweep.store import to_markdown

    df = _store(experiment, directory, results).load_tables()["table"]
    click.echo(df.to_csv(index=False) if fmt == "csv" else to_markdown(df), nl=False)


@cli.command()
@click.argument("experiment")
@click.option("--dir", "--out", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Result directory [default: <results>/EXPERIMENT].")
@_results_option
def plot(experiment, directory, results) -> None:
    """Redraw EXPERIMENT's figures from its saved tables (no simulation).

    Tables that no longer match their manifest (truncated, edited) are refused.  Figures are drawn
    into a scratch directory first and replace only figures this program wrote.
    """
    import shutil
    import tempfile

    from .config import build
    from .sweep.store import read_manifest

    exp = _experiment(experiment)
    store = _store(experiment, directory, results)
    tables = store.load_tables()
    if not exp.plot:
        raise UserError(f"{experiment} has no figures")
    manifest = read_manifest(store.root / "manifest.json")
    if manifest["experiment"] != exp.name:
        raise UserError(f"{store.root} holds results of {manifest['experiment']!r}, not {exp.name!r}")
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise UserError(f"{store.root / 'manifest.json'}: corrupt manifest (no config)")
    base = build(exp.config, config)
    lock = store.lock()
    scratch = Path(tempfile.mkdtemp(prefix=f".{store.name}.plot-", dir=store.root.parent))
    try:
        from .report.figures import render, save_all

        drawn = save_all(render(exp.plot, tables, base), scratch)
        owned = store.owned_files(manifest)
        for path in drawn:  # check every figure before replacing any
            target = store.root / Path(path).name
            if target.exists() and target.name not in owned:
                raise UserError(f"{target} was not written by this program: not replaced")
        for path in drawn:
            click.echo(str(store.rewrite(Path(path).name, Path(path).read_bytes())))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        lock.release()


@cli.command()
@click.argument("experiment", nargs=-1)
@click.option("--run", "run_missing", is_flag=True,
              help="Run (default config) each named experiment that has no saved results, instead of skipping it.")
@click.option("--quick", is_flag=True, help="Run each experiment's quick configuration into runs/verify-quick/ "
              "and verify those results (the committed results/ are not touched).")
@click.option("--redecide", is_flag=True, help="Re-evaluate EXPERIMENT's claims on its saved tables under the current "
              "definitions (no simulation), rewrite its claims.csv and log changed definitions in claims-changes.csv.")
@click.option("--reason", default=None, help="Why the definitions changed (required with --redecide; logged).")
@click.option("--results", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"Results root to read and write [default: ${ENV_RESULTS}, else the project's results/; "
                   "runs/verify-quick with --quick].")
def verify(experiment, run_missing, quick, redecide, reason, out) -> None:
    """Collect the papers' claims from saved results; nothing is simulated unless --run or --quick.

    Each claim is a reproduction (a paper's prediction that could fail), a consistency check (a
    test of the code) or exploratory (a measurement the papers do not claim, never counted);
    verdicts PASS, FAIL, INCONCLUSIVE (the 95% interval straddles the band) or STALE (the claim's
    definition changed since its result was produced: rerun the experiment).
    Merges EXPERIMENT's rows into verification.csv and writes VERIFICATION.md, verification-summary.md
    and coverage.md.  Exit 0 when no reproduction FAILs or is STALE, 1 otherwise, 2 on a user error.
    """
    from . import experiments
    from .verify import verify as run_verify

    if redecide and not experiment:
        raise UserError("--redecide needs the experiments to re-decide, e.g. `dynamics verify --redecide EXP --reason ...`")
    if redecide and not (reason and reason.strip()):
        raise UserError("--redecide needs --reason \"...\": the change log records why definitions changed")
    if reason is not None and not redecide:
        raise UserError("--reason only goes with --redecide")
    if quick and redecide:
        raise UserError("--quick and --redecide do not combine: re-decide saved results, or run quick ones")
    names = list(experiment) or experiments.names()
    registry = {n: experiments.get(n) for n in names}  # unknown names fail here, before anything is read
    registry = {n: experiments.get(n) for n in experiments.names()} | registry
    root = out or (runs_root() / "verify-quick" if quick else results_root())
    runner_fn = None
    if quick or run_missing:
        from .sweep import runner

        def runner_fn(name):
            p = runner.plan(registry[name], quick=quick)
            runner.execute(p, root / name, argv=["dynamics", "verify", name] + (["--quick"] if quick else ["--run"]))
        if quick:
            for name in names:
                if registry[name].claims:
                    runner_fn(name)
    outcome = run_verify(registry, root, list(experiment), run=runner_fn,
                         redecide_reason=reason.strip() if redecide else None)
    for name in outcome.verified:
        c = outcome.counts(name)
        fmt = lambda d: " ".join(f"{v} {k}" for k, v in d.items() if v) or "none"
        click.echo(f"{name:26s} reproductions: {fmt(c['reproduction']):40s} consistency: {fmt(c['consistency'])}"
                   + (f"  exploratory: {fmt(c['exploratory'])}" if any(c["exploratory"].values()) else ""))
        rows = outcome.table[(outcome.table.experiment == name) & (outcome.table.kind == "reproduction")]
        for verdict in ("FAIL", "STALE"):
            ids = rows[rows.verdict == verdict].claim.tolist()
            if ids:
                click.echo(f"{'':26s}   {verdict}: {', '.join(ids)}")
    for name, why in outcome.skipped.items():
        click.echo(f"{name:26s} skipped: {why}")
    rep = outcome.table[outcome.table.experiment.isin(outcome.verified) & (outcome.table.kind == "reproduction")]
    click.echo(f"{len(rep)} reproductions: " + ", ".join(
        f"{int((rep.verdict == v).sum())} {v}" for v in ("PASS", "FAIL", "INCONCLUSIVE", "STALE"))
        + f" -> {root / 'VERIFICATION.md'}")
    sys.exit(1 if outcome.failed else 0)


@cli.command()
@click.option("--results", "root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=_RESULTS_HELP + " report.html and REPORT.md are written there.")
def report(root) -> None:
    """Write one self-contained HTML page (and a Markdown version) with every experiment's tables,
    figures and claims, the verification table, and links to the manifests."""
    from .report.html import build

    for path in build(results_root(root)):
        click.echo(str(path))


@cli.command()
@click.option("--readme", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The README to refresh [default: the project's README.md].")
def readme(readme) -> None:
    """Refresh README.md's result blocks (<!-- results: PATH -->) from the files in results/."""
    from .report.readme import refresh

    for path in refresh(readme or readme_path()):
        click.echo(path)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that the same clean-up runs: the worker pool is stopped,
    finished cells stay on disk, nothing is half-written."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminated(exc: Terminated) -> None:
    click.echo(f"dynamics: terminated ({exc})", err=True)
    sys.exit(128 + exc.signum)


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_like_interrupt():
    """Within the command line only (never at import): SIGTERM and SIGHUP unwind like Ctrl-C.

    Their default action kills this process at once, and a killed parent cannot stop its process pool:
    the workers would compute on, orphaned, until their batches end."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live on the main thread
        yield
        return
    old = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every fault becomes one line; see the module docstring for the exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    _DEBUG["on"] = bool(os.environ.get("DYNAMICS_DEBUG")) or "--debug" in args[:1]
    try:
        with _terminate_like_interrupt():
            cli.main(args=args, prog_name="dynamics", standalone_mode=False)
    except Terminated as exc:
        _terminated(exc)
    except UserError as exc:
        click.echo(f"dynamics: error: {_one_line(exc)}", err=True)
        sys.exit(EXIT_USER)
    except click.ClickException as exc:
        click.echo(f"dynamics: error: {_one_line(exc.format_message())}", err=True)
        sys.exit(EXIT_USER)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        if isinstance(exc.__context__, Terminated):  # click turns an interrupt inside a command into Abort
            _terminated(exc.__context__)
        click.echo("dynamics: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS:
            _internal(exc)
        where = exc.filename if exc.filename is not None else ""
        click.echo(f"dynamics: error: {exc.strerror or exc}{': ' + str(where) if where else ''}", err=True)
        sys.exit(EXIT_USER)
    except SystemExit:
        raise
    except Exception as exc:  # a bug: one line, the traceback on request
        _internal(exc)
    sys.exit(0)


def _internal(exc: BaseException) -> None:
    if _DEBUG["on"]:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        sys.exit(EXIT_INTERNAL)
    message = _one_line(f"{type(exc).__name__}: {exc}")[:300]
    click.echo(f"dynamics: internal error: {message} (run `dynamics --debug ...` for the traceback)", err=True)
    sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
