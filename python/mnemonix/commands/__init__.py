"""CLI subcommands. Each module defines ``add_parser(subparsers)`` and, when it
contributes to ``mnemonix demo``, ``demo_section(ctx) -> None``."""
