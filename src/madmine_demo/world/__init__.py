"""The synthetic segmentation task, with exact masks, deterministic by seed.

    shapes, textures   the object classes (shape, colour, texture) and surfaces
    scene              scenes as data, rendered with exact label maps, seeded per image
    failures           the training domain and the wild corpus with its corner cases and OOD
    datasets           the folders on disk (images, labels, index), written once per seed
    truth              what the world knows about each image, looked up by image_id
"""
