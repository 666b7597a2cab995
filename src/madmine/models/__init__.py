"""How a model is built and versioned: every kind of model (kinds/), class maps (classmap.py),
precomputed maps (maps.py), the registry that builds and checks them (registry.py), and the
resolution of a parsed config's models (resolve.py).

The package imports nothing itself: reading a class map or resolving a config must not pay for
torch, which the registry and the kinds need.
"""
