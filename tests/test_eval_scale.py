"""Scale options of both evaluations (docs/BENCHMARK.md §11.6): --shard and --merge, P shards by
concatenation, --distribute mirrored on two logical CPU devices, --mixed-precision, --jit."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import eval_corrupted_rafdb
import eval_perturbed_rafdb
import inference
import rafdb_dataset
import robustness
import stability
from cli_common import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE = 24
TIMING = ("seconds", "images_per_second")


def save_model(path, seed=3, batchnorm=False):
    """Flatten -> Dense(7) softmax (optionally a BatchNorm first) with fixed random weights."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0, offset=-0.5)(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    dense = model.layers[-1]
    dense.set_weights([rng.normal(0, 0.5, (SIZE * SIZE * 3, 7)).astype("float32"),
                       np.zeros(7, "float32")])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def workspace(sample_tree, tmp_path_factory):
    """RAF-DB (the sample), a 2 corruptions x 2 severities export, a tiny perturbed tree, a model."""
    root = tmp_path_factory.mktemp("scale")
    os.symlink(sample_tree, root / "RAF-DB")
    subprocess.run([sys.executable, str(REPO / "rafdb_aug_dataset.py"), "export", "--rafdb", "RAF-DB",
                    "--out", "corrupted_raf_dataset", "--corruptions", "gaussian_noise,contrast",
                    "--severities", "1-2", "--workers", "1", "--quiet"], cwd=root, check=True,
                   capture_output=True)
    names = rafdb_dataset.load_labels(root / "RAF-DB", "test", "soft").names
    rng = np.random.default_rng(0)
    for folder in ("rafdb.test.p_gaussian_noise", "rafdb.test.p_rotate", "rafdb.test.p_scale"):
        (root / "perturbed" / folder).mkdir(parents=True)
        for name in names:
            for frame in range(30):
                image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                cv2.imwrite(str(root / "perturbed" / folder / f"{name}_{frame:02d}.jpg"), image)
    save_model(root / "runs" / "a" / "checkpoint.01.keras")
    return root


def in_dir(root, function, *args):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return function([str(arg) for arg in args])
    finally:
        os.chdir(cwd)


C_ARGS = ("runs/a/checkpoint.01.keras", "--corruptions", "gaussian_noise,contrast", "--severities", "1-2")


def without_timing(path):
    data = json.loads(Path(path).read_text())
    for result in data["results"]:
        for key in TIMING:
            result[key] = None
    return data


def test_shards_merge_into_the_single_run_report(workspace, tmp_path, capsys):
    assert in_dir(workspace, eval_corrupted_rafdb.main, *C_ARGS, "--json", tmp_path / "single.json",
                  "--csv", tmp_path / "single.csv") == 0
    single_out = capsys.readouterr().out
    parts = []
    for index in range(3):
        part = tmp_path / f"part{index}.json"
        assert in_dir(workspace, eval_corrupted_rafdb.main, *C_ARGS, "--shard", f"{index}/3",
                      "--json", part) == 0
        parts.append(part)
    shard_rows = [[row["folder"] for row in json.loads(p.read_text())["results"][0]["folders"]]
                  for p in parts]
    units = ["RAF-DB/basic/Image/aligned"] + [f"corrupted_raf_dataset/rafdb.test.{c}.{s}"
                                              for c in ("gaussian_noise", "contrast") for s in (1, 2)]
    assert shard_rows == [units[0::3], units[1::3], units[2::3]]  # units i, i+3, ...
    assert json.loads(parts[1].read_text())["results"][0]["summary"] is None
    capsys.readouterr()
    # merged in another order: same report
    assert in_dir(workspace, eval_corrupted_rafdb.main, "--merge", parts[2], parts[0], parts[1],
                  "--json", tmp_path / "all.json", "--csv", tmp_path / "all.csv") == 0
    merged_out = capsys.readouterr().out
    single, merged = without_timing(tmp_path / "single.json"), without_timing(tmp_path / "all.json")
    assert json.dumps(merged, indent=1) == json.dumps(single, indent=1)  # byte-equal modulo timing
    assert (tmp_path / "all.csv").read_bytes() == (tmp_path / "single.csv").read_bytes()
    block = single_out[: single_out.index("\n\n\n") + 3]
    assert merged_out.startswith(block)
    # a shard whose evaluation stopped before its second model makes the merge say so
    data = json.loads(parts[0].read_text())
    data.update(complete=False, models_planned=2)
    parts[0].write_text(json.dumps(data))
    assert in_dir(workspace, eval_corrupted_rafdb.main, "--merge", *parts, "--json", tmp_path / "all2.json") == 0
    merged = json.loads((tmp_path / "all2.json").read_text())
    assert (merged["complete"], merged["models_planned"], len(merged["results"])) == (False, 2, 1)


def test_merge_takes_an_empty_shard_and_shards_run_from_another_folder(workspace, tmp_path, capsys):
    """6 shards over 5 units (the last one empty: its outputs' kind stays unknown), one of them run
    from another working directory with absolute paths: the merge equals the single run's rows."""
    assert in_dir(workspace, eval_corrupted_rafdb.main, *C_ARGS, "--json", tmp_path / "single.json") == 0
    parts = []
    for index in range(6):
        part = tmp_path / f"part{index}.json"
        if index == 2:  # same model file, same export, other spelling of the paths
            args = (workspace / C_ARGS[0], *C_ARGS[1:], "--rafdb", workspace / "RAF-DB",
                    "--corrupted", workspace / "corrupted_raf_dataset")
            assert in_dir(tmp_path, eval_corrupted_rafdb.main, *args, "--shard", "2/6", "--json", part) == 0
        else:
            assert in_dir(workspace, eval_corrupted_rafdb.main, *C_ARGS, "--shard", f"{index}/6",
                          "--json", part) == 0
        parts.append(part)
    assert json.loads(parts[5].read_text())["results"][0]["folders"] == []
    assert in_dir(workspace, eval_corrupted_rafdb.main, "--merge", *parts, "--json", tmp_path / "all.json") == 0
    single = json.loads((tmp_path / "single.json").read_text())["results"][0]
    merged = json.loads((tmp_path / "all.json").read_text())["results"][0]
    assert [(row["corruption"], row["severity"], row["accuracy"]) for row in merged["folders"]] == \
        [(row["corruption"], row["severity"], row["accuracy"]) for row in single["folders"]]
    assert merged["summary"] == single["summary"]


def test_merge_refuses_missing_or_repeated_shards(workspace, tmp_path):
    part = tmp_path / "part0.json"
    in_dir(workspace, eval_corrupted_rafdb.main, *C_ARGS, "--shard", "0/2", "--json", part)
    with pytest.raises(UserError, match=r"missing 1/2"):
        robustness.merge_results([part])
    with pytest.raises(UserError, match=r"repeated 0/2"):
        robustness.merge_results([part, part])
    part1 = tmp_path / "part1.json"
    in_dir(workspace, eval_corrupted_rafdb.main, *C_ARGS, "--shard", "1/2", "--json", part1)
    with pytest.raises(UserError, match=r"shard 1/2 .*--merge"):
        robustness.load_baseline(part1)
    # a shard of another test set (another dataset or split of the same N): refused by name
    other = json.loads(part1.read_text())
    other["results"][0]["test_set_sha256"] = "cd" * 32
    (tmp_path / "other1.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match=r"differ in 'test_set_sha256'"):
        robustness.merge_results([part, tmp_path / "other1.json"])
    # shard 1 made with another file at the same path (overwritten between the runs): named as such
    other = json.loads(part1.read_text())
    other["results"][0]["checkpoint"]["checkpoint_sha256"] = "ef" * 32
    (tmp_path / "changed1.json").write_text(json.dumps(other))
    checkpoint = other["results"][0]["checkpoint"]["checkpoint"]
    with pytest.raises(UserError, match=rf"missing 1/2 \({tmp_path}/changed1\.json holds shard 1/2 of another "
                                        rf"model, {checkpoint} \(SHA-256 efefefefefef\)\)"):
        robustness.merge_results([part, tmp_path / "changed1.json"])
    # a shard run with another preprocessing: the field inside the model record is named, with both values
    other = json.loads(part1.read_text())
    recorded = other["results"][0]["checkpoint"]["preprocessing"]
    other["results"][0]["checkpoint"]["preprocessing"] = "scale01-other"
    (tmp_path / "pre1.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match=rf"differ in 'checkpoint' \(checkpoint\.preprocessing: 'scale01-other' in "
                                        rf"{tmp_path}/pre1\.json, {recorded!r} in {part}\)"):
        robustness.merge_results([part, tmp_path / "pre1.json"])
    # shards of two models, each set incomplete: both are named in one error
    other = json.loads(part1.read_text())
    other["results"][0]["checkpoint"].update(checkpoint="runs/b/other.keras", checkpoint_sha256="ab" * 32)
    other["results"][0]["shard"] = {"index": 1, "count": 3}
    (tmp_path / "b1.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match=r"--merge: runs/a/checkpoint\.01\.keras: expected shards 0\.\.1 once each; "
                                        r"missing 1/2; and runs/b/other\.keras: expected shards 0\.\.2 once each; "
                                        r"missing 0/3, 2/3$"):
        robustness.merge_results([part, tmp_path / "b1.json"])
    # a shard rendered on the fly beside one read from the tree: named as such, not by the paths (a tree
    # shard records none beside its manifest)
    other = json.loads(part1.read_text())
    other["results"][0].update(on_the_fly=True, manifest=None)
    (tmp_path / "fly1.json").write_text(json.dumps(other))
    with pytest.raises(UserError, match=r"differ in 'on_the_fly' \(on_the_fly: True in .*fly1\.json, False in "):
        robustness.merge_results([part, tmp_path / "fly1.json"])


@pytest.mark.parametrize("flags, named", [
    (["--save-probabilities", "all.npz"], "--save-probabilities"),
    (["--adapt", "bn", "--seed", "5"], "--adapt, --seed"),
    (["--corrupted", "elsewhere", "--batch", "8"], "--batch, --corrupted"),
])
def test_merge_refuses_the_flags_it_would_ignore(flags, named, capsys):
    """A flag of the evaluation itself given to --merge (which only combines the shards' JSONs) is an
    error naming it, before any file is read; the merge's own outputs and baseline flags parse."""
    with pytest.raises(SystemExit) as stop:
        eval_corrupted_rafdb.parse_args(["--merge", "a.json", "b.json", "--json", "all.json", *flags])
    assert stop.value.code == 2
    assert f"error: {named}: not used by --merge" in capsys.readouterr().err
    args = eval_corrupted_rafdb.parse_args(["--merge", "a.json", "b.json", "--json", "all.json", "--csv", "all.csv",
                                            "--plot", "all.png", "--baseline", "base.json", "-v"])
    assert args.merge == [Path("a.json"), Path("b.json")] and args.checkpoint is None


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "0/0", "1/\uff13"])
def test_bad_shard(text):
    with pytest.raises(UserError, match="--shard"):
        robustness.parse_shard(text)


@pytest.mark.parametrize("text", ["-1", "two"])
def test_bad_workers_is_refused_when_parsing(text, capsys):
    """--workers as for the exports: 0 means all cores, a negative or non-number is refused."""
    with pytest.raises(SystemExit) as exit_:
        eval_corrupted_rafdb.parse_args(["model.keras", "--on-the-fly", "--workers", text])
    assert exit_.value.code == 2
    assert f"argument --workers: expected a positive number of processes or 0 (all cores), got '{text}'" \
        in capsys.readouterr().err
    assert eval_corrupted_rafdb.parse_args(["model.keras", "--on-the-fly", "--workers", "0"]).workers == 0


def test_perturbation_shards_concatenate_to_the_single_file(workspace, tmp_path):
    common = ["runs/a/checkpoint.01.keras", "--perturbed", "perturbed"]
    assert in_dir(workspace, eval_perturbed_rafdb.main, *common, "--out", tmp_path / "all.txt") == 0
    for index in range(2):
        assert in_dir(workspace, eval_perturbed_rafdb.main, *common, "--shard", f"{index}/2",
                      "--out", tmp_path / f"p{index}.txt") == 0
    single = (tmp_path / "all.txt").read_text()
    joined = (tmp_path / "p0.txt").read_text() + (tmp_path / "p1.txt").read_text()  # cat p0 p1

    # every shard block states its shard and the folder count of the whole run; otherwise the blocks are equal
    for index, count in ((0, 2), (1, 1)):
        metas = [line for line in (tmp_path / f"p{index}.txt").read_text().splitlines() if line.startswith("# labels=")]
        assert len(metas) == count and all(f" shard={index}/2 planned=3 ends=1" in line for line in metas)

    def blocks(text):
        found, current = [], []
        for line in text.replace(" shard=0/2 planned=3", "").replace(" shard=1/2 planned=3", "").splitlines():
            if stability.END_LINE.fullmatch(line):  # each run ends with its own "# end blocks=N"
                continue
            if "," in line and len(line.split(",")) == 2:
                current = [line]
                found.append(current)
            else:
                current.append(line)
        return sorted("\n".join(block) for block in found)

    assert blocks(joined) == blocks(single) and len(blocks(single)) == 3
    # one end line per run: the single run's closes its 3 blocks, each shard's its own
    assert single.endswith("# end blocks=3\n")
    shard_ends = [(tmp_path / f"p{i}.txt").read_text().splitlines()[-1] for i in range(2)]
    assert sorted(shard_ends) == ["# end blocks=1", "# end blocks=2"]
    (tmp_path / "joined.txt").write_text(joined)
    tables = []
    for name in ("all.txt", "joined.txt"):
        table = stability.compute(stability.group_blocks(stability.read_predictions(tmp_path / name)))
        tables.append(stability.format_tsv(table))
        computed = table["methods"]
        tables.append({method: {name: {k: v for k, v in entry.items() if k != "line"}
                                for name, entry in summary["perturbations"].items()}
                       for method, summary in computed.items()})
    assert tables[0] == tables[2] and tables[1] == tables[3]
    # a shard left out of the concatenation (or one given twice instead of the other) is named, not
    # averaged over the folders present
    for name, text in (("p0only.txt", "p0.txt"), ("p1twice.txt", "p1.txt p1.txt")):
        (tmp_path / name).write_text("".join((tmp_path / part).read_text() for part in text.split()))
        with pytest.raises(UserError, match=rf"{name}: .*: (2|1) of the 3 perturbation folders of a run split into "
                                            rf"2 shards; no block of shard\(s\) {1 if name == 'p0only.txt' else 0}/2: "
                                            rf"concatenate the files of all 2 shards"):
            stability.group_blocks(stability.read_predictions(tmp_path / name), str(tmp_path / name))


def _shard_block(checkpoint, folder, index, extra=""):
    return (f"# labels=hard N=2 source=landmarks frames=3 model_sha256={'ab' * 32}{extra} shard={index}/2 planned=2 "
            f"ends=1\n{checkpoint},/t/rafdb.test.{folder}\n0,0,0\n1,1,0\n# end blocks=1\n")


def test_shards_that_name_one_model_file_by_two_paths_are_one_method(tmp_path, caplog):
    """An array job's shards ran the same model file from two nodes' paths: one method (it was two half
    methods, then a refusal blaming a missing shard); shards of other settings are named where they are."""
    path = tmp_path / "joined.txt"
    path.write_text(_shard_block("/node1/runs/a/best.keras", "p_rotate", 0)
                    + _shard_block("/node2/runs/a/best.keras", "p_gaussian_noise", 1))
    with caplog.at_level("WARNING"):
        table = stability.group_blocks(stability.read_predictions(path), str(path))
    # named and located as one run from the first path: 'a' (the run folder), not the long collision names
    assert list(table) == ["a"] and sorted(table["a"]) == ["p_gaussian_noise", "p_rotate"]
    assert {block.checkpoint for block in table["a"].values()} == {"/node1/runs/a/best.keras"}
    assert "the shards of one run name the model file (SHA-256 abababababab) by different paths" in caplog.text
    # its results JSON names that path, and report.py reads it (a null checkpoint made it fail)
    import eval_perturbed_rafdb2
    import report

    assert eval_perturbed_rafdb2.main([str(path), "--json", str(tmp_path / "s.json")]) == 0
    method = json.loads((tmp_path / "s.json").read_text())["methods"]["a"]
    assert method["checkpoint"] == "/node1/runs/a/best.keras" and method["checkpoint_sha256"] == "ab" * 32
    rows = report.make_report([tmp_path / "s.json"], tmp_path / "report")["rows"]
    assert [row["model"] for row in rows] == ["a"]
    # the same, but shard 1 evaluated with another preprocessing: not one run; named, not called missing
    path.write_text(_shard_block("/node1/runs/a/best.keras", "p_rotate", 0, " preprocessing=none class_order=a,b")
                    + _shard_block("/node2/runs/a/best.keras", "p_gaussian_noise", 1,
                                   " preprocessing=scale01 class_order=a,b"))
    with pytest.raises(UserError, match=r"1 of the 2 perturbation folders of a run split into 2 shards; no block of "
                                        r"shard\(s\) 1/2 under this name: shard\(s\) 1/2 of the same model file are "
                                        r"read as .* \(evaluated with other settings, or a repeated run\); every shard of one run needs "
                                        r"the same flags"):
        stability.group_blocks(stability.read_predictions(path), str(path))


def test_jit_runner_equals_the_model(workspace):
    import checkpoints

    path = workspace / "runs" / "a" / "checkpoint.01.keras"
    classifier = checkpoints.adapt(checkpoints.load_classifier(path), path)
    images = np.random.default_rng(5).integers(0, 256, (10, SIZE, SIZE, 3), dtype=np.uint8)
    expected = classifier.model.predict(images.astype(np.float32), verbose=0)  # model's own output
    plain = inference.Runner(classifier).predict(classifier.make_array_dataset(images))
    np.testing.assert_allclose(plain, expected, atol=1e-6)
    jit = inference.Runner(classifier, jit=True)
    np.testing.assert_allclose(jit.predict(classifier.make_array_dataset(images)), expected, atol=1e-5)
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        with pytest.raises(UserError, match="TF_ENABLE_ONEDNN_OPTS=0"):
            inference.Runner(classifier, mixed_precision=True)


MIXED = textwrap.dedent("""
    import os, sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    import keras, checkpoints, inference
    path = {path!r}
    classifier = checkpoints.adapt(checkpoints.load_classifier(path), path)
    images = np.random.default_rng(5).integers(0, 256, (10, 24, 24, 3), dtype=np.uint8)
    expected = classifier.model.predict(images.astype(np.float32), verbose=0)
    half = inference.Runner(classifier, mixed_precision=True)
    dense = [layer for layer in half.model.layers if isinstance(layer, keras.layers.Dense)][0]
    assert dense.compute_dtype == "float16" and dense.kernel.dtype == "float32", dense.compute_dtype
    scores = half.predict(classifier.make_array_dataset(images))
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=2e-2)  # float16 arithmetic, same model
    assert np.abs(scores - expected).max() > 0  # it did compute in float16
    assert all(layer.compute_dtype == "float32" for layer in classifier.model.layers)  # untouched
    print("ok")
""")


def test_mixed_precision_runner_on_cpu_with_onednn_off(workspace):
    code = MIXED.format(repo=str(REPO), path=str(workspace / "runs" / "a" / "checkpoint.01.keras"))
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0"))
    assert completed.returncode == 0 and completed.stdout.strip().endswith("ok"), completed.stderr[-3000:]


MIRRORED = textwrap.dedent("""
    import json, os, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {repo!r})
    os.chdir({root!r})
    import eval_corrupted_rafdb
    args = {args!r}
    eval_corrupted_rafdb.main(args + ["--distribute", "mirrored", "--batch", "{batch}", "--json", {out!r}])
""")


@pytest.mark.slow
@pytest.mark.parametrize("batch", ["5", "last-one"])
def test_mirrored_on_two_logical_cpus_equals_a_plain_run(workspace, tmp_path, batch):
    """Batches of 5 split over 2 replicas (3 + 2); and odd batches with a last batch of one image on
    the small CNN: the second replica's empty batch crashed its convolution and BatchNorm."""
    args = list(C_ARGS)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if batch == "last-one":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1"  # TensorFlow's default on x86, where the crash showed  # the small CNN (convolutions without bias, then BatchNorm)
        import models

        (workspace / "runs" / "conv").mkdir(exist_ok=True)
        models.build_model("smallcnn", 64, lpf=0).save(workspace / "runs" / "conv" / "checkpoint.01.keras")
        args[0] = "runs/conv/checkpoint.01.keras"
        n = len(rafdb_dataset.load_labels(workspace / "RAF-DB", "test", "soft").names)
        # an odd batch (split unevenly: 3 + 2, ...), and a last batch of one image
        batch = str(max(b for b in range(3, n, 2) if n % b == 1))
    in_dir(workspace, eval_corrupted_rafdb.main, *args, "--batch", batch, "--json", tmp_path / "plain.json")
    code = MIRRORED.format(repo=str(REPO), root=str(workspace), args=args, batch=batch,
                           out=str(tmp_path / "mirrored.json"))
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    plain = json.loads((tmp_path / "plain.json").read_text())["results"][0]
    mirrored = json.loads((tmp_path / "mirrored.json").read_text())["results"][0]
    assert mirrored["runtime"]["distribute"] == "mirrored" and mirrored["runtime"]["replicas"] == 2
    # batches of 5 split over 2 replicas (3 + 2) and an odd last batch: same rows, same order
    for a, b in zip(plain["folders"], mirrored["folders"]):
        assert a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"]
        assert a["nll"] == pytest.approx(b["nll"], rel=1e-5)


def test_perturbation_writer_adapt_bn_is_labelled(workspace, tmp_path):
    save_model(workspace / "runs" / "bn" / "checkpoint.01.keras", batchnorm=True)
    out = tmp_path / "adapted.txt"
    assert in_dir(workspace, eval_perturbed_rafdb.main, "runs/bn/checkpoint.01.keras", "--perturbed",
                  "perturbed", "--perturbations", "p_rotate", "--adapt", "bn", "--adapt-prior", "8",
                  "--out", out) == 0
    meta = out.read_text().split("\n")[1]
    assert meta.startswith("# labels=soft ") and " adapted=bn_prior8 " in meta + " "
    blocks = stability.read_predictions(out)
    assert blocks[0].meta["adapted"] == "bn_prior8"
    # the requested --batch is stated (the default, 64), as the robustness result's adapt_batch
    assert blocks[0].meta["adapt_batch"] == "64"
    assert in_dir(workspace, eval_perturbed_rafdb.main, "runs/bn/checkpoint.01.keras", "--perturbed",
                  "perturbed", "--perturbations", "p_rotate", "--adapt", "bn", "--batch", "30",
                  "--out", out, "--append") == 0
    blocks = stability.read_predictions(out)
    assert [(b.meta["adapted"], b.meta["adapt_batch"]) for b in blocks] == [("bn_prior8", "64"), ("bn", "30")]
    # an unadapted run states no batch (it changes no prediction there)
    plain = tmp_path / "plain.txt"
    assert in_dir(workspace, eval_perturbed_rafdb.main, "runs/bn/checkpoint.01.keras", "--perturbed",
                  "perturbed", "--perturbations", "p_rotate", "--out", plain) == 0
    assert "adapt_batch" not in stability.read_predictions(plain)[0].meta
    with pytest.raises(UserError, match="--adapt-prior needs --adapt bn"):
        in_dir(workspace, eval_perturbed_rafdb.main, "runs/bn/checkpoint.01.keras", "--perturbed",
               "perturbed", "--adapt-prior", "8", "--out", out)


def test_adapt_prior_without_adapt_is_refused_before_looking_for_trees(tmp_path):
    """The flags' contradiction is the error, not a missing tree the user would then go and find."""
    for main, extra in ((eval_corrupted_rafdb.main, ["--rafdb", str(tmp_path / "none")]),
                        (eval_perturbed_rafdb.main, ["--perturbed", str(tmp_path / "none")])):
        with pytest.raises(UserError, match="--adapt-prior needs --adapt bn"):
            main([str(tmp_path / "m.keras"), *extra, "--adapt-prior", "5"])


def test_perturbation_writer_saves_probabilities(workspace, tmp_path):
    out, saved_path = tmp_path / "p.txt", tmp_path / "p.npz"
    assert in_dir(workspace, eval_perturbed_rafdb.main, "runs/a/checkpoint.01.keras", "--perturbed",
                  "perturbed", "--perturbations", "p_scale", "--out", out,
                  "--save-probabilities", saved_path, "--json", tmp_path / "cal.json") == 0
    saved = np.load(saved_path)
    names = rafdb_dataset.load_labels(workspace / "RAF-DB", "test", "soft").names
    assert list(saved["image"]) == [f"{name}_{frame:02d}" for name in names for frame in range(30)]
    assert set(saved["folder"]) == {"rafdb.test.p_scale"}
    # the model's own outputs on frames read with cv2 (BGR -> RGB; already 24x24: no resize)
    model = keras.saving.load_model(workspace / "runs" / "a" / "checkpoint.01.keras")
    frames = np.stack([cv2.cvtColor(cv2.imread(str(workspace / "perturbed" / "rafdb.test.p_scale" / f"{image}.jpg")),
                                    cv2.COLOR_BGR2RGB) for image in saved["image"]]).astype(np.float32)
    np.testing.assert_allclose(saved["probabilities"], model.predict(frames, verbose=0), atol=1e-5)
    lines = [line for line in out.read_text().splitlines() if line and not line.startswith("#")][1:]
    classes = np.argmax(saved["probabilities"], axis=1).reshape(len(names), 30)
    assert lines == [",".join(map(str, row)) for row in classes]
    # calibration over the frames, each labelled with its sequence's (soft) label, by hand
    labels = rafdb_dataset.load_labels(workspace / "RAF-DB", "test", "soft").labels.astype(np.float64)
    (row,) = json.loads((tmp_path / "cal.json").read_text())["folders"]
    p = saved["probabilities"].astype(np.float64)
    y = np.repeat(labels, 30, axis=0)
    nll = float(np.mean([-sum(t * np.log(max(q, 1e-12)) for t, q in zip(yr, pr)) for yr, pr in zip(y, p)]))
    brier = float(np.mean([sum((q - t) ** 2 for t, q in zip(yr, pr)) for yr, pr in zip(y, p)]))
    targets = [int(np.argmax(t)) for t in y]
    assert row["folder"] == "rafdb.test.p_scale" and row["n_frames"] == 30 * len(names)
    assert row["nll"] == pytest.approx(nll, rel=1e-9) and row["brier"] == pytest.approx(brier, rel=1e-9)
    assert row["accuracy"] == pytest.approx(np.mean(np.argmax(p, axis=1) == np.array(targets)))
    assert sum(map(sum, row["confusion"])) == 30 * len(names)


@pytest.mark.parametrize("flags, message", [
    ({"jit": True}, "--jit with --distribute mirrored: XLA cannot compile"),
    ({"adapt": "bn"}, "--adapt bn with --distribute mirrored: the adaptation pools"),
])
def test_combinations_mirrored_cannot_run_are_refused(flags, message):
    """--jit and --adapt with --distribute mirrored are refused before any model is copied (XLA failed
    on the replicas' variables with a traceback; adaptation would pool per-replica statistics)."""
    import inference

    with pytest.raises(UserError, match=message):
        inference.Runner(object(), distribute="mirrored", **flags)
