"""Training-batch augmentation: the affine distortion moves, turns and scales images as its spec
says, fills with the background, is repeatable per seed, and is refused for vector data; the
stroke augmentation widens or thins strokes by up to a pixel a side; several run in turn."""

from pathlib import Path

import numpy as np
import pytest

from shared.model_file import read_manifest
from trainer import cli, train
from trainer.augment import get_augmentation


def square(side=28, top=10, left=12, size=4, fill=0.0):
    image = np.full((side, side), fill, dtype=np.float32)
    image[top:top + size, left:left + size] = 1.0
    return image


def centre_of_mass(image):
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return (image * ys).sum() / image.sum(), (image * xs).sum() / image.sum()


def test_no_distortion_is_the_identity():
    x = np.random.default_rng(0).random((16, 784), dtype=np.float32)
    augment = get_augmentation("affine(shift=0, rotate=0, scale=0)", side=28)
    out = augment(x, np.random.default_rng(1))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


def test_shift_moves_the_ink_by_at_most_the_given_pixels_and_keeps_its_mass():
    x = np.repeat(square().reshape(1, -1), 200, axis=0)
    out = get_augmentation("affine(shift=2)", side=28)(x, np.random.default_rng(0))
    before = np.array(centre_of_mass(square()))
    moves = np.array([centre_of_mass(image.reshape(28, 28)) for image in out]) - before
    assert np.abs(moves).max() <= 2 + 1e-4
    assert np.abs(moves).max() > 1.5  # the range is used, not just a nudge
    np.testing.assert_allclose(out.sum(axis=1), x.sum(axis=1), rtol=1e-5)  # bilinear shifts keep mass


def test_rotation_and_scale_keep_the_centre_and_change_the_shape():
    x = np.repeat(square(top=4, left=13, size=2).reshape(1, -1), 50, axis=0)  # a dot above the centre
    out = get_augmentation("affine(shift=0, rotate=30, scale=0.2)", side=28)(x, np.random.default_rng(0))
    centre = 13.5
    for image in out.reshape(-1, 28, 28):
        y, x_ = centre_of_mass(image)
        distance = np.hypot(y - centre, x_ - centre)
        assert 9.5 * 0.8 - 0.5 <= distance <= 9.5 * 1.2 + 0.5  # turned about the centre, scaled by <= 20 %
        assert abs(np.degrees(np.arctan2(x_ - centre, centre - y))) <= 30 + 3
    assert np.abs(out - x).max() > 0.5


def test_pixels_from_outside_the_image_read_as_the_fill_value():
    fill = -0.42
    x = np.full((8, 784), fill, dtype=np.float32)
    out = get_augmentation("affine(shift=3, rotate=20, scale=0.2)", side=28, fill=fill)(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, fill, atol=1e-6)


def test_same_seed_same_distortion():
    x = np.random.default_rng(0).random((8, 784), dtype=np.float32)
    augment = get_augmentation("affine(shift=2, rotate=10, scale=0.1)", side=28)
    np.testing.assert_array_equal(augment(x, np.random.default_rng(5)), augment(x, np.random.default_rng(5)))
    assert not np.array_equal(augment(x, np.random.default_rng(5)), augment(x, np.random.default_rng(6)))


def bar(width, fill=-0.5, ink=2.5):
    """A 28x28 image (normalised values) with a vertical bar ``width`` pixels wide, rows 4-23."""
    image = np.full((28, 28), fill, dtype=np.float32)
    image[4:24, 14 - width // 2:14 - width // 2 + width] = ink
    return image


def ink_width(image, fill=-0.5, ink=2.5):
    """The bar's width in pixels, fractions included, read across row 14."""
    return float(((image[14] - fill) / (ink - fill)).sum())


def test_stroke_widens_each_side_by_up_to_a_pixel_and_keeps_the_background():
    x = np.repeat(bar(3).reshape(1, -1), 400, axis=0)
    out = get_augmentation("stroke(widen=1)", side=28, fill=-0.5)(x, np.random.default_rng(0))
    widths = np.array([ink_width(image.reshape(28, 28)) for image in out])
    assert widths.min() >= 3 - 1e-5 and widths.max() <= 5 + 1e-5  # 3 px, plus up to 1 on each side
    assert widths.min() < 3.1 and widths.max() > 4.9  # the whole range is used
    images = out.reshape(-1, 28, 28)
    across = images[:, 14, 1:]  # columns 1 to 27: centred on the bar's middle column, 14
    np.testing.assert_allclose(across, across[:, ::-1], atol=1e-6)  # widened the same on both sides
    far = np.ones((28, 28), dtype=bool)
    far[3:25, 12:17] = False  # the bar, rows 4-23 and columns 13-15, and a pixel round it
    np.testing.assert_array_equal(images[:, far], -0.5)  # nothing beyond a pixel of the ink changes


def test_stroke_thins_by_up_to_the_given_fraction_of_a_pixel_a_side():
    x = np.repeat(bar(5).reshape(1, -1), 400, axis=0)
    out = get_augmentation("stroke(widen=0, thin=0.5)", side=28, fill=-0.5)(x, np.random.default_rng(0))
    widths = np.array([ink_width(image.reshape(28, 28)) for image in out])
    assert widths.max() <= 5 + 1e-5 and widths.min() >= 4 - 1e-5
    assert widths.min() < 4.1 and widths.max() > 4.9


def test_augmentations_joined_by_plus_run_in_turn():
    x = np.repeat(bar(3).reshape(1, -1), 8, axis=0)
    chain = get_augmentation("affine(shift=2) + stroke(widen=1)", side=28, fill=-0.5)
    assert repr(chain) == "affine(shift=2, rotate=0, scale=0) + stroke(widen=1, thin=0)"
    # The same draws in the same order as the two applied one after the other.
    rng = np.random.default_rng(3)
    by_hand = get_augmentation("stroke(widen=1)", side=28, fill=-0.5)(
        get_augmentation("affine(shift=2)", side=28, fill=-0.5)(x, rng), rng)
    np.testing.assert_array_equal(chain(x, np.random.default_rng(3)), by_hand)
    assert not np.array_equal(by_hand, x)


@pytest.mark.parametrize("spec, message", [
    ("affine(shift=-1)", "shift >= 0"),
    ("affine(scale=1.5)", "scale < 1"),
    ("mixup", "unknown augmentation"),
    # Shifted by half the field or more, a digit can leave it and the network trains on blanks.
    ("affine(shift=14)", "shift < 14 .half the 28-pixel field."),
    ("affine(shift=100)", "shift < 14"),
    ("affine(rotate=400)", "rotate <= 180"),
    ("stroke(widen=2)", "widen <= 1"),
    ("stroke(thin=-0.5)", "0 <= thin <= 1"),
    ("affine(shift=1) + ", "joined by '[+]'"),
    ("affine(shift=1) + mixup", "unknown augmentation 'mixup'"),
])
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        get_augmentation(spec, side=28)


def test_the_largest_distortions_that_keep_the_item_are_accepted():
    assert get_augmentation("affine(shift=13, rotate=180)", side=28) is not None


@pytest.fixture
def vector_npz(tmp_path):
    """A small NPZ dataset of 5-value vectors, which have no pixels to distort."""
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=rng.random((40, 5)), y_train=rng.integers(0, 2, 40),
             x_test=rng.random((10, 5)), y_test=rng.integers(0, 2, 10))
    return path


def test_augmenting_vector_data_is_refused(vector_npz):
    config = train.TrainConfig(dataset="npz", data_path=str(vector_npz), hidden=[4], epochs=1, augment="affine(shift=1)",
                               progress=False)
    with pytest.raises(ValueError, match="image datasets"):
        train.run(config, log=lambda *_: None)


def test_augmented_training_on_real_mnist_learns(tmp_path, datasets_dir):
    config = train.TrainConfig(dataset="mnist", data_dir=str(datasets_dir / "mnist"), hidden=[64], epochs=3,
                               limit_train=6000, augment="affine(shift=2, rotate=10, scale=0.1)", progress=False)
    result = train.run(config, output_dir=str(tmp_path / "out"), log=lambda *_: None)
    assert result["metrics"]["accuracy"] > 0.88


def test_augment_flag_reaches_the_manifest_and_changes_what_the_network_learns(tmp_path, datasets_dir):
    def trained(name: str, *flags: str) -> Path:
        out = tmp_path / name
        assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(datasets_dir / "mnist"), "--hidden", "16",
                         "--epochs", "1", "--limit-train", "1000", "--seed", "3", *flags, "--no-progress",
                         "--output", str(out)]) == 0
        return out / "model.npz"

    augmented = trained("augmented", "--augment", "affine(shift=1, rotate=5)")
    manifest = read_manifest(augmented)
    assert manifest["training"]["config"]["augment"] == "affine(shift=1, rotate=5)"
    assert "--augment" in manifest["training"]["command"]
    # The same seed without --augment trains on the rows as they are: other weights.
    with np.load(augmented) as a, np.load(trained("plain")) as b:
        assert not np.array_equal(a["dense1.weight"], b["dense1.weight"])
    with np.load(augmented) as a, np.load(trained("again", "--augment", "affine(shift=1, rotate=5)")) as b:
        assert np.array_equal(a["dense1.weight"], b["dense1.weight"])  # and the seed repeats the distortions


def test_augment_flag_on_vector_data_is_a_clear_cli_error(tmp_path, vector_npz, capsys):
    code = cli.main(["train", "--dataset", "npz", "--data-path", str(vector_npz), "--augment", "affine(shift=1)",
                     "--no-progress", "--output", str(tmp_path / "out")])
    assert code == 2  # one "error:" line, as for any run-time problem
    out, err = capsys.readouterr()
    assert "image datasets" in err
    assert "params" not in out, "refused with the other checks, before the network's summary is printed"


def test_augmenting_an_npz_of_pictures_read_as_vectors_names_the_flag_that_reads_them_as_images(tmp_path, capsys):
    """28x28 pictures trained without --image are vectors, which --augment refused without saying why they
    were not images; the refusal names --image digit and --image garment."""
    rng = np.random.default_rng(0)
    path = tmp_path / "pictures.npz"
    np.savez(path, x=rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), y=rng.integers(0, 2, 40))
    assert cli.main(["train", "--dataset", "npz", "--data-path", str(path), "--augment", "affine(shift=1)",
                     "--hidden", "4", "--no-progress", "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        "error: --augment applies to image datasets; pictures has vector inputs: an npz's pictures, x of shape "
        "(n, height, width), are read as vectors unless --image digit or --image garment says what they show, which "
        "makes the model an image model that --augment applies to\n")
    assert not (tmp_path / "out").exists()
