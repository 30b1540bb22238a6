"""DG methods and augmentations: one interface (method.py), one registry (registry.py), one module each."""
