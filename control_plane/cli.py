"""`control-plane` command line."""
