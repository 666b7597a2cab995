"""Safe decoding: valid odd modes give the pixels a viewer shows; broken files a short reason."""

import imagehash
import numpy as np
import pytest
from PIL import Image

from madmine.images import ImageError, decode, decode_map_png, encode_map_png, perceptual_hash, probe
from worlds import bad_files, odd_images


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    return odd_images(tmp_path_factory.mktemp("odd"))


@pytest.mark.parametrize("name", ["gray", "gray16", "palette", "rgba", "cmyk", "exif_rotated"])
def test_odd_modes_decode_to_displayed_rgb(odd, name):
    path, expected = odd[name]
    img = decode(path.read_bytes())
    assert img.mode == "RGB"
    got = np.asarray(img)
    assert got.shape == expected.shape
    tolerance = 3 if name == "cmyk" else 0
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= tolerance


def test_probe_reports_the_displayed_size_of_exif_rotated_images(odd):
    path, expected = odd["exif_rotated"]
    _, width, height = probe(path.read_bytes())
    assert (height, width) == expected.shape[:2]


@pytest.mark.parametrize("name", ["zero-byte", "truncated", "text", "bomb", "1x1"])
def test_broken_files_raise_a_short_reason(tmp_path, name):
    path, reason = bad_files(tmp_path)[name]
    with pytest.raises(ImageError) as info:
        decode(path.read_bytes(), max_pixels=50_000_000)
    assert info.value.reason == reason


def test_bomb_is_refused_before_decoding_by_the_configured_limit(tmp_path):
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(ImageError, match="decompression bomb"):
        decode(path.read_bytes(), max_pixels=300 * 300 - 1)
    assert decode(path.read_bytes(), max_pixels=300 * 300).size == (300, 300)


def test_map_png_round_trip_keeps_indices_and_metadata():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 21, size=(33, 17)).astype(np.uint8)
    m[0, 0] = 255
    back, text = decode_map_png(encode_map_png(m, {"mean_entropy": repr(0.1 + 0.2)}))
    assert np.array_equal(back, m)
    assert float(text["mean_entropy"]) == 0.1 + 0.2


def test_perceptual_hash_is_imagehash_phash_bit_for_bit(tmp_path):
    """Ingest's own phash (no per-call overhead) against the library's, on images of every mode,
    size and content the fuzz corpus's valid seeds hold, plus random photographs-like noise."""
    rng = np.random.default_rng(5)
    images = [Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)) for h, w in
              [(8, 8), (31, 33), (64, 48), (96, 96), (300, 200), (513, 700)]]
    images += [Image.fromarray(np.full((40, 40), v, np.uint8), "L") for v in (0, 128, 255)]  # flat: ties at the median
    images += [Image.fromarray((np.add.outer(np.arange(50), np.arange(70)) % 256).astype(np.uint8)).convert("P")]
    images += [img.convert("RGBA") for img in images[:2]]
    for img in images:
        assert perceptual_hash(img) == int(str(imagehash.phash(img)), 16), (img.mode, img.size)
