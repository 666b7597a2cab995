"""Tests on a multi-node Ray cluster (a package, so that its cluster stops when the folder is done)."""
