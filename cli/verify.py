"""`gscan verify` and `gscan keys`: reports checked row by row and whole, and the key pair that signs them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from forensics.text import visible

from .app import app, out
from .exit_codes import EXIT_CHANGED


@app.command("verify")
def verify_command(
    report: Annotated[Path, typer.Argument(help="A report gscan wrote (.csv, .json or .jsonl), its .seal beside it.")],
    public_key: Annotated[Optional[Path], typer.Option(
        metavar="FILE", help="The scanner's Ed25519 public key (gscan keys): check the signed seal without any "
                             "secret, on any machine.")] = None,
) -> None:
    """Check that a report is the one gscan wrote: every row (its row_digest, under your report key) and the whole
    (columns, row count and order against its signed seal).

    Exit 0 when everything checked holds, 4 when rows were changed, deleted, moved, added or cut off, or the
    columns or seal differ, 2 when there is no report or nothing to check with."""
    from forensics.integrity import report_key
    from forensics.seal import load_public_key
    from forensics.verify import verify_report

    key = report_key(create=False)
    result = verify_report(report, key, load_public_key(public_key) if public_key else None)
    for path, why in result.changed:
        out.print(escape(visible(f"changed: {path}: {why}")), soft_wrap=True, highlight=False)
    for problem in result.problems:
        out.print(escape(visible(f"not whole: {problem}")), soft_wrap=True, highlight=False)
    rows = (f"{result.rows - result.changed_count} intact, {result.changed_count} changed" if result.rows_checked
            else "row digests not checked (no report key here)")
    seal = (f"seal checked with the {' and the '.join(result.authenticated_by)}" if result.authenticated_by
            else "seal not authenticated")
    whole = "whole" if not result.problems else "NOT whole"
    out.print(f"{result.rows} rows, {rows}; {seal}; {whole}", highlight=False)
    if not result.intact:
        if key is not None and result.changed_count == result.rows and result.rows:
            out.print("every row fails: if the report came from another machine, its report key differs "
                      "(check with --public-key instead)", highlight=False)
        raise typer.Exit(EXIT_CHANGED)


@app.command("keys")
def keys_command(
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for the key pair.")] = Path("."),
    name: Annotated[str, typer.Option(help="File name stem: NAME.key (private) and NAME.pub.")] = "gscan-signing",
) -> None:
    """Make an Ed25519 key pair for signing reports: scans sign with NAME.key (--sign-key), anyone checks with
    NAME.pub (gscan verify --public-key)."""
    from forensics.seal import make_key_pair

    private, public, fingerprint = make_key_pair(out_dir, name)
    out.print(escape(visible(f"private key: {private} (keep it secret; mode 0600)")), soft_wrap=True, highlight=False)
    out.print(escape(visible(f"public key: {public} (hand it to whoever checks your reports)")), soft_wrap=True,
              highlight=False)
    out.print(f"fingerprint: {fingerprint}", highlight=False)
