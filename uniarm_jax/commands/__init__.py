"""The `uniarm` command line: argument parsing and each command's glue over the library."""
