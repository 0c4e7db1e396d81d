"""Subcommands of the `flowprobe` console command (see flowprobe.cli)."""
