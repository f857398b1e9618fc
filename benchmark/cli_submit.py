"""`soupbench submit | import | export | verify`: a method's way from one file to a verified row.

Thin wrappers over `benchmark.submission`; errors are `UserError`s, said in one line by the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from benchmark.cli_options import TaskDirs, use_task_dirs
from benchmark.errors import UserError


def register(app: typer.Typer, console, out, quiet_libraries) -> None:
    """Add the submission commands to the `soupbench` app."""

    @app.command()
    def submit(
        method_file: Annotated[Path, typer.Argument(help="The .py file that defines the method.")],
        name: Annotated[str, typer.Option(help="Submitter's name, as the leaderboard shows it.")],
        contact: Annotated[str, typer.Option(help="Submitter's contact (e-mail or URL).")],
        out_file: Annotated[Path, typer.Option("--out", help="Bundle file to write (.soup.zip).")],
        method: Annotated[Optional[str], typer.Option(help="The method's name, if the file defines several.")] = None,
        suite: Annotated[str, typer.Option(help="The released suite to run on.")] = "micro",
        task_dir: TaskDirs = None,
    ) -> None:
        """Run a method file on every task and seed of the released suite and write its result bundle."""
        use_task_dirs(task_dir)
        from benchmark.bundle import Submitter
        from benchmark.progress import RichReporter
        from benchmark.submission import submit as run_submit
        from benchmark.suite import load_suite

        spec = load_suite(suite)
        quiet_libraries()
        with RichReporter(console) as reporter:
            digest = run_submit(method_file, spec, out_file, Submitter(name=name, contact=contact), method,
                                reporter=reporter, log=lambda m: console.print(m, highlight=False))
        console.print(f"bundle written to {out_file} (sha256 {digest}); send it to the leaderboard's keeper, who "
                      "runs `soupbench import` and `soupbench verify` on it", highlight=False)

    @app.command("import")
    def import_(
        bundle: Annotated[Path, typer.Argument(help="A bundle file written by `soupbench submit` or `export`.")],
        db: Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")] = None,
        release: Annotated[Optional[Path], typer.Option(help="The release the bundle must be run on; "
                                                        "default: the one installed.")] = None,
        task_dir: TaskDirs = None,
    ) -> None:
        """Check a bundle (hashes, release, every score from its samples) and add it, all or nothing."""
        use_task_dirs(task_dir)  # its scores are recomputed by its tasks' own metric code
        from benchmark.storage import check_writable, open_store, resolve_db_url
        from benchmark.submission import import_bundle

        url = resolve_db_url(db)
        check_writable(url)
        quiet_libraries()
        store = open_store(url)
        try:
            read, submission = import_bundle(bundle, store, release)
        finally:
            store.close()
        manifest = read.manifest
        console.print(f"imported {manifest.method.name} by {manifest.submitter.name}: {len(manifest.runs)} runs "
                      f"(submission {submission}, bundle {read.sha256[:16]}) into {url}", highlight=False)

    @app.command()
    def export(
        out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the bundles into.")],
        db: Annotated[Optional[str], typer.Option(help="Database URL or SQLite path.")] = None,
        suite: Annotated[str, typer.Option(help="Suite whose rows to bundle.")] = "micro",
        method: Annotated[Optional[list[str]], typer.Option(help="Only these methods (repeatable).")] = None,
        name: Annotated[str, typer.Option(help="Submitter named in bundles of built-in rows.")] = "SoupBench",
        contact: Annotated[str, typer.Option(help="Contact named in bundles of built-in rows.")] =
            "https://github.com/soupbench/soupbench",
    ) -> None:
        """Write one bundle per stored method setting of a suite (submitted rows keep their submitter)."""
        from benchmark.bundle import Submitter
        from benchmark.storage import resolve_db_url
        from benchmark.submission import export_bundles

        written = export_bundles(resolve_db_url(db), suite, out_dir, method, Submitter(name=name, contact=contact))
        if not written:
            raise UserError(f"no stored ok runs of suite {suite!r}" + (f" for {', '.join(method)}" if method else ""))
        for label, path, digest in written:
            console.print(f"{label}: {path} (sha256 {digest[:16]})", highlight=False)

    @app.command()
    def verify(
        bundle: Annotated[Path, typer.Argument(help="A bundle file.")],
        db: Annotated[Optional[str], typer.Option(
            help="Database holding the bundle's rows: the verification and hidden scores are stored there.")] = None,
        hidden_seed: Annotated[Optional[str], typer.Option(
            envvar="SOUPBENCH_HIDDEN_SEED", show_envvar=True,
            help="The keeper's secret: also score the method on a fresh eval set drawn from it.")] = None,
        threads: Annotated[Optional[int], typer.Option(min=1, help="torch threads for the re-run.")] = None,
        reproduce: Annotated[bool, typer.Option(
            "--reproduce/--hidden-only", help="--hidden-only: skip the re-run, only score the hidden set.")] = True,
        task_dir: TaskDirs = None,
    ) -> None:
        """Re-run a bundle's method from its source on the released weights and compare every sample."""
        use_task_dirs(task_dir)
        from benchmark.progress import RichReporter
        from benchmark.storage import check_writable, open_store, resolve_db_url
        from benchmark.submission import verify_bundle

        store = None
        if db is not None or os.environ.get("SOUPBENCH_DB"):
            url = resolve_db_url(db)
            check_writable(url)
            store = open_store(url)
        quiet_libraries()
        try:
            with RichReporter(console) as reporter:
                found = verify_bundle(bundle, store, hidden_seed or None, threads, reporter, reproduce)
        finally:
            if store is not None:
                store.close()
        if reproduce:
            table = Table("run", "samples reproduced", "share")
            for cell, (same, total) in found.per_run.items():
                table.add_row(cell, f"{same} / {total}", f"{same / total:.3f}" if total else "n/a")
            out.print(table)
            console.print(f"{found.reproduced} of {found.compared} per-sample outputs reproduced ({found.share:.1%}) "
                          f"with {found.threads} torch threads in {found.seconds:.0f} s"
                          + (f"; stored as {found.state}" if found.state else ""), highlight=False)
        if found.hidden_set:
            hidden = Table("task", "seed", "public", f"hidden ({found.hidden_set})")
            for (task, seed), value in sorted(found.hidden.items()):
                public = found.public.get((task, seed))
                hidden.add_row(task, str(seed), "n/a" if public is None else f"{public:.3f}", f"{value:.3f}")
            out.print(hidden)
            console.print(f"hidden set {found.hidden_set}: {found.hidden_overlap:.1%} of its documents are also public "
                          "ones", highlight=False)
        if reproduce and found.share < 1.0:
            raise typer.Exit(1)
