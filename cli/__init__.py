"""gscan's command line: a thin Typer shell over the forensics library."""
