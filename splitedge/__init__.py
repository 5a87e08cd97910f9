"""The `splitedge` command: one entry point, each subcommand imports only what it needs (the
device's commands never import torch)."""
