"""The command-line interface: the only place that imports typer/rich, prints, or exits."""
