"""The synthetic troubleshooting world and `madmine demo`: the whole method, measured against
exact ground truth, on a machine that can download no weights or web corpora.

    world/     the segmentation task: shapes, textures, scenes, the training domain and the
               wild corpus with its corner cases, the folders on disk, the truth per image
    zoo/       the target and three competitors of other designs, trained on CPU and cached
    people/    simulated raters (ACR votes through the rating storage) and an annotator
               (true masks through a COCO export and `annotate import`)
    baselines, arena, measure, printout, settings, demo
               the demo itself: baselines with MAD's budget, the arena of fine-tuned targets,
               failure yields, what it prints, its two sizes, and `run_demo`

madmine itself never imports this package; only `madmine demo` does.
"""
