"""The command-line commands, one module per group of commands; `mbbench.cli` attaches them."""
