"""Datasets: CIFAR pickles in the official layout, image folders from a zip or directory, augmentation."""

import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from earlyprune.training.data import BatchLoader, DataError, load_dataset
from earlyprune.training.data.base import channel_stats
from earlyprune.training.data.loader import random_crop_flip


def _write_pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _fake_cifar(root, name="cifar10", n=20):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for i in range(1, 6):
            _write_pickle(folder / f"data_batch_{i}", {b"batch_label": b"x", b"labels": list(rng.integers(0, 10, n)),
                                                       b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
        _write_pickle(folder / "test_batch", {b"labels": list(rng.integers(0, 10, n)),
                                              b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
        _write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            _write_pickle(folder / split, {b"fine_labels": list(rng.integers(0, 100, n)),
                                           b"coarse_labels": list(rng.integers(0, 20, n)),
                                           b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
        _write_pickle(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    return folder


@pytest.mark.parametrize("name,classes,train", [("cifar10", 10, 100), ("cifar100", 100, 20)])
def test_cifar_loader_reads_the_official_pickle_layout(tmp_path, name, classes, train):
    folder = _fake_cifar(tmp_path, name)
    data = load_dataset(name, data_dir=str(tmp_path), download=False)
    assert data.train_x.shape == (train, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.num_classes == classes and len(data.test_y) == 20 and data.augment == "standard"
    raw = pickle.load(open(folder / ("test_batch" if name == "cifar10" else "test"), "rb"), encoding="bytes")
    assert torch.equal(data.test_x[3], torch.from_numpy(raw[b"data"][3].reshape(3, 32, 32)))  # CHW, row-major


def test_cifar_missing_truncated_and_hostile_files_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 not found: expected .*cifar-10-batches-py/\{data_batch_1"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)
    folder = _fake_cifar(tmp_path)
    blob = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="data_batch_2 is truncated or corrupt"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="not a CIFAR data file .refusing to load .*print"):
        load_dataset("cifar10", data_dir=str(tmp_path), download=False)


def _png(colour, size=(8, 8)):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _fake_zip(path, split="test", prefix="CIFAR-10-images/", sizes=None):
    colours = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}
    with zipfile.ZipFile(path, "w") as zf:
        for s, count in (("train", 4), (split, 2)):
            for cls, colour in colours.items():
                for i in range(count):
                    zf.writestr(f"{prefix}{s}/{cls}/{i:04d}.png", _png(colour, (sizes or {}).get((s, cls, i), (8, 8))))
        zf.writestr(f"{prefix}README.txt", "not an image")
    return path


def test_folder_loader_reads_a_zip_and_caches_the_decoded_arrays(tmp_path):
    pytest.importorskip("PIL")
    src = _fake_zip(tmp_path / "imgs.zip")
    cache = tmp_path / "cache.npz"
    logs = []
    data = load_dataset(f"folder:{src}", cache=str(cache), log=logs.append)
    assert data.classes == ["cat", "dog", "emu"] and data.train_x.shape == (12, 3, 8, 8)
    assert data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.train_x[0, :, 0, 0].tolist() == [200, 10, 10] and cache.is_file()
    logs.clear()
    again = load_dataset(f"folder:{src}", cache=str(cache), log=logs.append)
    assert not logs and torch.equal(again.train_x, data.train_x) and again.mean == pytest.approx(data.mean)
    cache.write_bytes(b"damaged")
    assert torch.equal(load_dataset(f"folder:{src}", cache=str(cache), log=logs.append).test_x, data.test_x)
    assert "damaged cache" in logs[0]


def test_folder_subsets_decode_only_the_images_used(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from earlyprune.training.data import folder

    src = _fake_zip(tmp_path / "imgs.zip")
    decoded = []
    real = folder._decode_all
    monkeypatch.setattr(folder, "_decode_all", lambda items, *a: decoded.append(len(items)) or real(items, *a))
    logs = []
    small = load_dataset(f"folder:{src}", cache=str(tmp_path / "c.npz"), train_subset=5, test_subset=3, seed=7,
                         log=logs.append)
    assert decoded == [5, 3] and "decoded 5 + 3 images" in logs[0] and "subsets of 12 + 6" in logs[0]
    # the same images, labels and statistics as decoding everything and drawing the subsets afterwards
    full = load_dataset(f"folder:{src}", cache="none", log=logs.append)
    drawn = full.subset(5, 7, test=3)
    assert torch.equal(small.train_x, drawn.train_x) and torch.equal(small.test_y, drawn.test_y)
    assert small.mean == pytest.approx(channel_stats(drawn.train_x)[0])
    decoded.clear()
    again = load_dataset(f"folder:{src}", cache=str(tmp_path / "c.npz"), train_subset=5, test_subset=3, seed=7)
    assert not decoded and torch.equal(again.train_x, small.train_x)  # its own cache
    # with a full cache present, the subset comes from it: nothing decoded, same arrays and statistics
    load_dataset(f"folder:{src}", cache=str(tmp_path / "full.npz"), log=logs.append)
    decoded.clear()
    served = load_dataset(f"folder:{src}", cache=str(tmp_path / "full.npz"), train_subset=5, test_subset=3, seed=7)
    assert not decoded and torch.equal(served.test_x, small.test_x) and served.mean == pytest.approx(small.mean)


def test_folder_loader_directory_val_split_and_resizing(tmp_path):
    pytest.importorskip("PIL")
    src = _fake_zip(tmp_path / "imgs.zip", split="val", prefix="", sizes={("train", "dog", 1): (10, 6)})
    with zipfile.ZipFile(src) as zf:
        zf.extractall(tmp_path / "tree")
    with pytest.raises(DataError, match="different sizes .*pass --image-size"):
        load_dataset(f"folder:{tmp_path / 'tree'}", cache="none")
    data = load_dataset(f"folder:{tmp_path / 'tree'}", cache="none", image_size=4)
    assert data.train_x.shape == (12, 3, 4, 4) and len(data.test_y) == 6


def test_folder_loader_truncated_zip_and_corrupt_image(tmp_path):
    pytest.importorskip("PIL")
    src = _fake_zip(tmp_path / "imgs.zip")
    blob = src.read_bytes()
    (tmp_path / "cut.zip").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cut.zip is not a readable zip file"):
        load_dataset(f"folder:{tmp_path / 'cut.zip'}", cache="none")
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as zf:
        zf.writestr("train/cat/0.png", _png((1, 2, 3)))
        zf.writestr("train/cat/1.png", _png((1, 2, 3))[:30])
        zf.writestr("test/cat/0.png", _png((1, 2, 3)))
    with pytest.raises(DataError, match="cannot decode train/cat"):
        load_dataset(f"folder:{tmp_path / 'bad.zip'}", cache="none")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing.zip'}")
    with zipfile.ZipFile(tmp_path / "flat.zip", "w") as zf:
        zf.writestr("a.png", _png((1, 2, 3)))
    with pytest.raises(DataError, match="no images in the layout train/<class>"):
        load_dataset(f"folder:{tmp_path / 'flat.zip'}", cache="none")


def test_random_crop_flip_matches_a_per_image_reference():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    oy, ox = torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(16):
        ref = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        assert torch.equal(out[i], ref.flip(2) if flip[i] else ref)


def test_batch_loader_normalises_orders_and_resumes():
    x = torch.randint(0, 256, (70, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(70) % 10
    mean, std = channel_stats(x)
    loader = BatchLoader(x, y, 32, mean, std, augment=True, shuffle=True, seed=3)
    assert len(loader) == 3 and loader.num_images == 70
    batches = list(loader)
    allx = torch.cat([b for b, _ in BatchLoader(x, y, 32, mean, std)])
    assert allx.mean(dim=(0, 2, 3)).abs().max() < 1e-4 and (allx.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2
    state = loader.state_dict()
    nxt = list(loader)
    loader.load_state_dict(state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(nxt, list(loader)))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(batches, nxt))  # a new order every epoch
    assert len(BatchLoader(x[:65], y[:65], 32, mean, std)) == 2  # a single-image tail is dropped (BatchNorm)


@pytest.mark.parametrize("n", [70, 67])
def test_sharded_ranks_together_see_the_single_process_global_batches(n):
    x = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8)
    y = torch.arange(n)
    mean, std = channel_stats(x)
    single = BatchLoader(x, y, 16, mean, std, augment=True, shuffle=True, seed=5)
    ranks = [BatchLoader(x, y, 8, mean, std, augment=True, shuffle=True, seed=5, rank=r, world_size=2) for r in (0, 1)]
    assert ranks[0].global_batch_size == 16 and len(ranks[0]) == len(ranks[1])
    # n=67: the global tail of 3 images cannot give both ranks 2 images — the ranks drop it (so their generator
    # differs from the single process's from then on: one epoch compared); n=70: a 3 + 3 tail, two epochs
    for _ in range(2 if n == 70 else 1):
        expected = list(single)
        got = list(zip(*ranks))
        assert len(got) == (5 if n == 70 else 4) and len(expected) == 5
        for (x0, y0), (x1, y1) in got:
            assert len(y0) == len(y1)
        for ((x0, y0), (x1, y1)), (xs, ys) in zip(got, expected):
            assert torch.equal(torch.cat([y0, y1]), ys) and torch.equal(torch.cat([x0, x1]), xs)
    with pytest.raises(ValueError, match="rank must be in"):
        BatchLoader(x, y, 8, mean, std, rank=2, world_size=2)


def test_digits_and_synthetic_and_unknown_names():
    pytest.importorskip("sklearn")
    digits = load_dataset("digits")
    assert digits.image_shape == (1, 8, 8) and digits.num_classes == 10 and len(digits.test_y) == 359
    synth = load_dataset("synthetic:40", image_size=8)
    assert synth.train_x.shape == (40, 3, 8, 8) and synth.subset(10).train_x.shape[0] == 10
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; choose one of"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="synthetic:N needs a whole number"):
        load_dataset("synthetic:many")


def test_cifar_download_verifies_the_checksum(tmp_path, monkeypatch):
    import dataclasses
    import hashlib
    import tarfile

    from earlyprune.training.data import cifar

    _fake_cifar(tmp_path / "src")
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    blob = archive.read_bytes()

    class Response(io.BytesIO):
        def __enter__(self):
            return self

    monkeypatch.setattr(cifar.urllib.request, "urlopen", lambda url, timeout: Response(blob))
    good = dataclasses.replace(cifar.CIFAR["cifar10"], md5=hashlib.md5(blob).hexdigest())
    monkeypatch.setitem(cifar.CIFAR, "cifar10", dataclasses.replace(good, md5="0" * 32))
    with pytest.raises(DataError, match="has MD5 .* expected 0000.*damaged"):
        load_dataset("cifar10", data_dir=str(tmp_path / "dl"), log=lambda m: None)
    assert not (tmp_path / "dl" / "cifar-10-python.tar.gz").exists()
    monkeypatch.setitem(cifar.CIFAR, "cifar10", good)
    data = load_dataset("cifar10", data_dir=str(tmp_path / "dl"), log=lambda m: None)
    assert len(data.train_y) == 100 and (tmp_path / "dl" / "cifar-10-python.tar.gz").is_file()


def test_decoding_says_how_far_it_got_when_it_takes_long(tmp_path, monkeypatch):
    """Decoding a large image folder takes minutes: progress lines come while it runs, not only at the end."""
    pytest.importorskip("PIL")
    from earlyprune.training.data import folder

    src = _fake_zip(tmp_path / "imgs.zip")
    monkeypatch.setattr(folder, "PROGRESS_SECONDS", -1.0)     # every image is "long" here
    logs = []
    load_dataset(f"folder:{src}", cache="none", log=logs.append)
    progress = [line for line in logs if "decoded" in line and " of " in line]
    assert progress[0] == "  decoded 1 of 12 images (8%)" and "  decoded 6 of 6 images (100%)" in progress
    assert logs[-1].startswith("decoded 12 + 6 images")
