"""Tests for synthetic_faces: layout, determinism, landmarks on the drawn features, distinct classes."""

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import synthetic_faces as sf

N_TRAIN, N_TEST = 30, 14


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _patch(luma: np.ndarray, xy, radius: int) -> np.ndarray:
    x, y = int(round(xy[0])), int(round(xy[1]))
    return luma[y - radius:y + radius + 1, x - radius:x + radius + 1]


def _vote_filter(p):
    """BENCHMARK.md §1.3, written out by hand: returns the renormalised label or None (dropped)."""
    d = [10.0 * float(v) for v in p]
    d = [0.0 if v <= 1 else v for v in d]
    total, top = sum(d), max(d)
    winners = sum(1 for v in d if v == top)
    if winners > 2 or winners * top <= 0.5 * total:
        return None
    return [v / total for v in d]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "RAF-DB"
    assert sf.write_sample_tree(root, n_train=N_TRAIN, n_test=N_TEST, seed=0) == root
    return root


# ------------------------------------------------------------------------------------------
# Layout


def test_tree_layout_names_and_counts(tree):
    train = [f"train_{i:05d}" for i in range(1, N_TRAIN + 1)]
    test = [f"test_{i:04d}" for i in range(1, N_TEST + 1)]
    names = train + test
    aligned = sorted(p.name for p in (tree / "basic/Image/aligned").iterdir())
    assert aligned == sorted(f"{n}_aligned.jpg" for n in names)
    originals = sorted(p.name for p in (tree / "basic/Image/original").iterdir())
    assert originals == sorted(f"{n}.jpg" for n in names)
    manual = sorted(p.name for p in (tree / "basic/Annotation/manual").iterdir())
    assert manual == sorted(f"{n}_manu_attri.txt" for n in names)
    rows = (tree / "basic/EmoLabel/list_patition_label.txt").read_text().splitlines()
    assert [r.split(" ")[0] for r in rows] == [f"{n}.jpg" for n in names]  # train rows first
    assert all(1 <= int(r.split(" ")[1]) <= 7 and len(r.split(" ")) == 2 for r in rows)
    # Every class appears in both splits (each block of 20 starts with one of each class).
    labels = [int(r.split(" ")[1]) for r in rows]
    assert set(labels[:N_TRAIN]) == set(range(1, 8)) and set(labels[N_TRAIN:]) == set(range(1, 8))
    assert sorted(p.name for p in tree.iterdir()) == ["basic", "distribute_basic.csv"]
    assert not list(tree.parent.glob(".RAF-DB.*"))  # no temporary folder left behind


def test_csv_rows_are_distributions_in_label_order(tree):
    lines = (tree / "distribute_basic.csv").read_text().splitlines()
    assert len(lines) == N_TRAIN + N_TEST
    rows = np.array([[float(v) for v in line.split(",")] for line in lines])
    assert rows.shape == (N_TRAIN + N_TEST, 7)
    assert np.all(rows >= 0) and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3)
    labels = [int(r.split(" ")[1]) - 1 for r in
              (tree / "basic/EmoLabel/list_patition_label.txt").read_text().splitlines()]
    assert np.mean(rows.argmax(axis=1) == np.array(labels)) >= 0.85


def test_images_and_landmark_files(tree):
    sizes = set()
    for path in sorted((tree / "basic/Image/aligned").iterdir()):
        assert _read_rgb(path).shape == (100, 100, 3)
    for path in sorted((tree / "basic/Annotation/manual").iterdir()):
        lines = path.read_text().splitlines()
        assert len(lines) == 8
        points = np.array([[float(v) for v in line.split("\t")] for line in lines[:5]])
        assert all(v.isdigit() for v in lines[5:])  # gender, race, age
        original = _read_rgb(tree / "basic/Image/original" / path.name.replace("_manu_attri.txt",
                                                                                ".jpg"))
        h, w = original.shape[:2]
        sizes.add((w, h))
        assert 110 <= w <= 260 and 110 <= h <= 260
        assert np.all(points >= 0) and np.all(points[:, 0] < w) and np.all(points[:, 1] < h)
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left first
        assert points[0, 1] < points[2, 1] < points[3, 1] + 5  # eyes above nose above mouth
    assert len({w for w, _ in sizes}) > 10  # varied sizes
    assert any(w != h for w, h in sizes)


# ------------------------------------------------------------------------------------------
# Determinism, refusal, atomicity


def test_same_seed_same_bytes_different_seed_different(tree, tmp_path):
    again = sf.write_sample_tree(tmp_path / "a" / "RAF-DB", n_train=N_TRAIN, n_test=N_TEST, seed=0)
    assert _tree_hashes(again) == _tree_hashes(tree)
    other = sf.write_sample_tree(tmp_path / "b" / "RAF-DB", n_train=N_TRAIN, n_test=N_TEST, seed=1)
    hashes, base = _tree_hashes(other), _tree_hashes(tree)
    assert hashes.keys() == base.keys()
    images = [k for k in base if k.endswith(".jpg")]
    assert all(hashes[k] != base[k] for k in images)


def test_prefix_of_a_larger_tree_is_identical(tree, tmp_path):
    """Per-image seeds: image n does not depend on how many images are generated."""
    bigger = sf.write_sample_tree(tmp_path / "RAF-DB", n_train=N_TRAIN + 5, n_test=N_TEST + 3)
    small, big = _tree_hashes(tree), _tree_hashes(bigger)
    for key in small:
        if key.endswith((".jpg", ".txt")) and "EmoLabel" not in key:
            assert big[key] == small[key], key


def test_refuses_non_empty_root_accepts_empty(tmp_path):
    root = tmp_path / "RAF-DB"
    root.mkdir()
    (root / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        sf.write_sample_tree(root, n_train=8, n_test=7)
    assert sorted(p.name for p in root.iterdir()) == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    sf.write_sample_tree(empty, n_train=8, n_test=7)
    assert len(list((empty / "basic/Image/aligned").iterdir())) == 15
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError):
        sf.write_sample_tree(a_file, n_train=8, n_test=7)


@pytest.mark.parametrize("n_train,n_test", [(0, 5), (5, 0), (-1, 3)])
def test_refuses_bad_counts(tmp_path, n_train, n_test):
    with pytest.raises(ValueError):
        sf.write_sample_tree(tmp_path / "RAF-DB", n_train=n_train, n_test=n_test)
    assert not (tmp_path / "RAF-DB").exists()


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    real = sf.make_sample

    def failing(seed, split, index, expression):
        if split == "test" and index == 2:
            raise RuntimeError("boom")
        return real(seed, split, index, expression)

    monkeypatch.setattr(sf, "make_sample", failing)
    with pytest.raises(RuntimeError, match="boom"):
        sf.write_sample_tree(tmp_path / "RAF-DB", n_train=5, n_test=5)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# Geometry: landmarks on the drawn features; aligned = original warped onto canonical eyes


def test_landmarks_lie_on_drawn_features():
    for i in range(42):
        image, landmarks = sf.draw_face(np.random.default_rng(1000 + i), i % 7, 100)
        assert image.shape == (100, 100, 3) and image.dtype == np.uint8
        assert landmarks.shape == (5, 2) and landmarks.dtype == np.float64
        luma = _luma(image)
        left_eye, right_eye, nose, mouth_left, mouth_right = landmarks
        # Skin reference: the cheeks, straight below each eye at the height of the nose.
        skin = np.mean([_patch(luma, (x, nose[1]), 2).mean() for x in (left_eye[0], right_eye[0])])
        for eye in (left_eye, right_eye):  # the pupil is at the eye landmark
            assert _patch(luma, eye, 1).min() < skin - 15, (i, "eye")
        # Nostrils are just beside/below the nose landmark.
        x, y = int(round(nose[0])), int(round(nose[1]))
        assert luma[y - 1:y + 4, x - 4:x + 5].min() < skin - 15, (i, "nose")
        # Each corner ends the (darker) mouth line: dark just inside, skin just outside.
        along = (mouth_right - mouth_left) / np.linalg.norm(mouth_right - mouth_left)
        for corner, inward in ((mouth_left, along), (mouth_right, -along)):
            inside = _patch(luma, corner + inward, 1).min()
            outside = _patch(luma, corner - 6 * inward, 1).mean()
            assert inside < outside - 15, (i, "mouth")


@pytest.mark.parametrize("size", [64, 100, 160])
def test_draw_face_puts_eyes_at_canonical_positions(size):
    image, landmarks = sf.draw_face(np.random.default_rng(5), 3, size)
    assert image.shape == (size, size, 3)
    scale = size / 100.0
    np.testing.assert_allclose(landmarks[:2], [[30 * scale, 40 * scale], [70 * scale, 40 * scale]])


def test_aligned_is_original_warped_onto_canonical_eyes(tree):
    names = [f"train_{i:05d}" for i in range(1, N_TRAIN + 1)] + [f"test_{i:04d}" for i in
                                                                 range(1, N_TEST + 1)]
    for name in names:
        original = _read_rgb(tree / "basic/Image/original" / f"{name}.jpg")
        aligned = _read_rgb(tree / "basic/Image/aligned" / f"{name}_aligned.jpg")
        lines = (tree / "basic/Annotation/manual" / f"{name}_manu_attri.txt").read_text()
        points = np.array([[float(v) for v in line.split()] for line in lines.splitlines()[:5]])
        # Similarity from the two eye landmarks onto (30, 40), (70, 40), solved by hand:
        # [u, v] = [[a, -b], [b, a]] [x, y] + [tx, ty].
        rows, rhs = [], []
        for (x, y), (u, v) in zip(points[:2], [(30.0, 40.0), (70.0, 40.0)]):
            rows += [[x, -y, 1, 0], [y, x, 0, 1]]
            rhs += [u, v]
        a, b, tx, ty = np.linalg.solve(np.array(rows), np.array(rhs))
        matrix = np.array([[a, -b, tx], [b, a, ty]])
        warped = cv2.warpAffine(original, matrix, (100, 100), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        assert np.abs(warped.astype(float) - aligned.astype(float)).mean() < 4.0, name
        # The other landmarks land where a face has them in the aligned frame.
        mapped = points @ matrix[:, :2].T + matrix[:, 2]
        assert 45 <= mapped[2, 0] <= 55 and 52 <= mapped[2, 1] <= 68  # nose
        assert np.all((mapped[3:, 1] > 60) & (mapped[3:, 1] < 90))  # mouth corners
        luma = _luma(aligned)
        skin = _patch(luma, (30, 60), 2).mean()
        assert _patch(luma, (30, 40), 1).min() < skin - 10 and _patch(luma, (70, 40), 1).min() < skin - 10
        # In the original too, the annotated eyes are on the (dark) pupils.
        luma = _luma(original)
        cheek = [points[0] + (points[3] - points[0]) * 0.6, points[1] + (points[4] - points[1]) * 0.6]
        skin = np.mean([_patch(luma, xy, 1).mean() for xy in cheek])
        for eye in points[:2]:
            assert _patch(luma, eye, 1).min() < skin - 10, name


# ------------------------------------------------------------------------------------------
# Expressions


def _region_diff(a: np.ndarray, b: np.ndarray, rows: slice) -> float:
    return float(np.abs(_luma(a)[rows, 20:80] - _luma(b)[rows, 20:80]).mean())


MOUTH, BROWS = slice(60, 90), slice(22, 48)


def test_expressions_differ_for_a_fixed_identity():
    for identity in range(4):
        faces = [sf.draw_face(np.random.default_rng(identity), e, 100)[0] for e in range(7)]
        # Same identity and background: the top corners (background) are identical.
        for face in faces[1:]:
            np.testing.assert_array_equal(face[:8, :8], faces[0][:8, :8])
        for i in range(7):
            for j in range(i + 1, 7):
                diff = _region_diff(faces[i], faces[j], MOUTH) + _region_diff(faces[i], faces[j],
                                                                              BROWS)
                assert diff > 2.0, (identity, sf.CLASS_NAMES[i], sf.CLASS_NAMES[j], diff)


def test_class_means_differ_more_than_split_halves():
    """Class-mean faces differ more than two halves of one class do (luma, z-scored per face).

    Every mean is over the same number of faces, so sampling noise is alike on both sides.
    """
    per_class, box = 100, (slice(14, 58), slice(12, 52))  # the face region at 64 px
    halves = []
    for e in range(7):
        faces = []
        for k in range(per_class):
            face = _luma(sf.draw_face(np.random.default_rng(10_000 * e + k), e, 64)[0])[box]
            faces.append((face - face.mean()) / face.std())
        faces = np.array(faces)
        halves.append((faces[0::2].mean(axis=0), faces[1::2].mean(axis=0)))
    within = max(np.abs(a - b).mean() for a, b in halves)
    for i in range(7):
        for j in range(i + 1, 7):
            between = min(np.abs(halves[i][h] - halves[j][h]).mean() for h in (0, 1))
            assert between > 1.3 * within, (sf.CLASS_NAMES[i], sf.CLASS_NAMES[j], between, within)


# ------------------------------------------------------------------------------------------
# Soft labels and the vote filter


def test_soft_labels_follow_the_drawn_class_and_exercise_the_filter():
    rng = np.random.default_rng(0)
    n, kept, argmax_ok, hard_ok = 3000, 0, 0, 0
    for k in range(n):
        expression = k % 7
        distribution, hard = sf._soft_label(rng, expression, rng.uniform(0.5, 1.05))
        text = sf._format_row(distribution)
        p = [float(v) for v in text.split(",")]
        assert len(p) == 7 and abs(sum(p) - 1.0) <= 1e-3 and min(p) >= 0
        label = _vote_filter(p)
        kept += label is not None
        argmax_ok += int(np.argmax(p)) == expression
        hard_ok += hard == int(np.argmax(p))
    dropped = 1 - kept / n
    assert 0.02 <= dropped <= 0.08  # a few percent: the filter is exercised
    assert argmax_ok / n >= 0.95
    assert hard_ok / n >= 0.95


def test_class_sequence_is_mildly_imbalanced_and_covers_every_class():
    classes = sf.class_sequence(0, "train", 1000)
    counts = np.bincount(classes, minlength=7)
    assert counts.sum() == 1000 and counts.min() >= 80 and counts.max() <= 220
    assert counts.max() > counts.min()  # not perfectly balanced
    for n in (7, 9, 21):
        assert set(sf.class_sequence(3, "test", n)) == set(range(7))
    assert sf.class_sequence(0, "train", 40) == sf.class_sequence(0, "train", 1000)[:40]


# ------------------------------------------------------------------------------------------
# Previews


def test_sample_face_is_deterministic():
    a, b = sf.sample_face(0, 3), sf.sample_face(0, 3)
    assert a.shape == (100, 100, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sf.sample_face(1, 3))
    assert not np.array_equal(a, sf.sample_face(0, 0))


@pytest.mark.parametrize("expression", [-1, 7])
def test_bad_expression_is_refused(expression):
    with pytest.raises(ValueError, match="expression"):
        sf.draw_face(np.random.default_rng(0), expression)


def test_progress_bar_on_stderr_does_not_change_the_bytes(tree, tmp_path, capsys):
    shown = sf.write_sample_tree(tmp_path / "RAF-DB", n_train=N_TRAIN, n_test=N_TEST, seed=0, progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and f"{N_TRAIN + N_TEST}/{N_TRAIN + N_TEST}" in captured.err
    assert _tree_hashes(shown) == _tree_hashes(tree)
    sf.write_sample_tree(tmp_path / "quiet" / "RAF-DB", n_train=2, n_test=2, seed=0, progress=False)
    assert capsys.readouterr().err == ""


def test_no_import_circle_with_the_dataset_module():
    """synthetic_faces must not import rafdb_dataset (rafdb_dataset's `sample` command imports it)."""
    import subprocess
    import sys

    code = ("import sys, synthetic_faces; "
            "print('rafdb_dataset' in sys.modules, synthetic_faces.CLASS_NAMES[0], synthetic_faces.NUM_CLASSES)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "surprise", "7"]


@pytest.mark.parametrize("seed, split", [(0, "train"), (3, "test")])
def test_class_counts_in_every_block_of_20(seed, split):
    """A block of 20 images holds classes 0..6 (surprise, fear, disgust, happiness, sadness, anger,
    neutral) 3, 2, 2, 4, 3, 3, 3 times: the mix the generator sets out (mildly RAF-DB-like, happiness
    most, fear and disgust rarest), the first seven being one of each class."""
    classes = sf.class_sequence(seed, split, 60)
    for start in range(0, 60, 20):
        block = classes[start:start + 20]
        assert np.bincount(block, minlength=7).tolist() == [3, 2, 2, 4, 3, 3, 3]
        assert sorted(block[:7]) == list(range(7))
