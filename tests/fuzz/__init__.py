"""The project-wide fuzz suite: generated bad arguments to every public entry, damaged files of every format."""
