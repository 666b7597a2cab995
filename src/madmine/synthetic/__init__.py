"""The synthetic troubleshooting world: a segmentation task with exact ground truth.

    shapes, textures   the object classes (shape, colour, texture) and surfaces
    world              scenes as data, rendered with exact label maps, seeded per image
    failures           the training domain and the wild corpus with its corner cases and OOD
    datasets           the folders on disk (images, labels, index), written once per seed
    models, zoo        four segmentation designs as factories; training on CPU with a cache
    truth              what the world knows about each image, looked up by image_id
    raters, annotator  the simulated people: ACR votes through the rating storage, true masks
                       through a COCO export and `annotate import`
"""
