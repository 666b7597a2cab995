"""Pure batch functions (dicts of numpy arrays in and out). They never import ray."""
