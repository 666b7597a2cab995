"""The simulated people: raters who vote through the rating storage (raters) and an annotator
who returns the true masks through a COCO export and `annotate import` (annotator)."""
