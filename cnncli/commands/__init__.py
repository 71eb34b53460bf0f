"""One module per subcommand; cnncli/cli.py dispatches to their `main`."""
