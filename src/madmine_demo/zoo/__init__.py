"""The demo's models: four segmentation designs as factories (nets) and their training on the
CPU, cached by settings and world version (training)."""
