"""The WikiText reader on tiny corpora written by the tests, plus one test on the real files."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from dynamics.corpus import load_wikitext
from dynamics.corpus import wikitext as W
from dynamics.errors import UserError

TRAIN = " = Title = \n\n the cat sat on the mat . \n the dog sat on the log . \n"
VALID = " the cat sat on a <unk> . \n the bird flew . \n"
TEST = " a dog sat . \n the end . \n"
REAL = os.environ.get("DYNAMICS_WIKITEXT")  # read before the fixture below hides it from the unit tests


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNAMICS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DYNAMICS_WIKITEXT", raising=False)


def corpus(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def test_counts_vocab_and_encoding(tmp_path):
    d = corpus(tmp_path / "d", {"train.txt": TRAIN, "valid.txt": VALID, "test.txt": TEST})
    wt = load_wikitext(d)
    assert (wt.train_split, wt.eval_split) == ("train", "test")
    assert wt.note == "trained on train, evaluated on test"
    # one <eos> per line, empty lines included (PyTorch word_language_model convention)
    assert len(wt.train) == sum(len(line.split()) + 1 for line in TRAIN.splitlines(keepends=True))
    # most frequent first; "<eos>" and "the" both occur 4 times and "<eos>" was seen first
    assert wt.vocab[:3] == ["<unk>", "<eos>", "the"]
    assert wt.train.dtype == np.int64 and wt.eval.dtype == np.int64
    assert wt.decode(wt.train[:4]) == ["=", "Title", "=", "<eos>"]
    # words absent from the training split ("a", "end") map to <unk> in the evaluation split
    assert wt.decode(wt.eval) == ["<unk>", "dog", "sat", ".", "<eos>", "the", "<unk>", ".", "<eos>"]
    assert wt.files["train"]["known"] is False and wt.files["train"]["release"] == "unrecognised"


def test_min_count_and_max_vocab(tmp_path):
    d = corpus(tmp_path / "d", {"train.txt": TRAIN, "test.txt": TEST})
    wt = load_wikitext(d, min_count=2)
    assert set(wt.vocab) == {"<unk>", "the", "sat", "on", ".", "<eos>", "="}
    small = load_wikitext(d, max_vocab=3)
    assert small.vocab == ["<unk>", "<eos>", "the"]
    assert small.train.max() == 2


def test_training_split_absent_uses_valid_and_says_so(tmp_path):
    d = corpus(tmp_path / "d", {"wiki.valid.tokens": VALID, "wiki.test.tokens": TEST})
    wt = load_wikitext(d)
    assert (wt.train_split, wt.eval_split) == ("valid", "test")
    assert "training split absent" in wt.note and "valid" in wt.note and "test" in wt.note
    assert wt.files["valid"]["layout"] == "tokens"


def test_raw_layout_and_tokens_preferred(tmp_path):
    raw = corpus(tmp_path / "raw", {"wiki.train.raw": TRAIN, "wiki.test.raw": TEST})
    wt = load_wikitext(raw)
    assert wt.files["train"]["layout"] == "raw"
    both = corpus(tmp_path / "both", {"wiki.train.raw": TRAIN, "wiki.test.raw": TEST,
                                      "train.txt": TRAIN, "test.txt": TEST})
    assert load_wikitext(both).files["train"]["layout"] == "tokens"
    assert load_wikitext(both, layout="raw").files["train"]["layout"] == "raw"


def test_env_variable_and_cache_invalidated_by_hash(tmp_path, monkeypatch):
    d = corpus(tmp_path / "d", {"train.txt": TRAIN, "test.txt": TEST})
    monkeypatch.setenv("DYNAMICS_WIKITEXT", str(d))
    first = load_wikitext()
    assert list((tmp_path / "cache" / "wikitext").glob("*.npz"))  # cached outside results/
    again = load_wikitext()
    assert again.vocab == first.vocab and np.array_equal(again.train, first.train)
    (d / "train.txt").write_text(TRAIN + " zebra zebra . \n")
    changed = load_wikitext()
    assert "zebra" in changed.vocab and len(changed.train) > len(first.train)


@pytest.mark.parametrize("files, kwargs, message", [
    ({"train.txt": "", "test.txt": TEST}, {}, "empty"),
    ({"train.txt": "\n\n\n", "test.txt": TEST}, {}, "empty"),
    ({"train.txt": b"the \xff\xfe cat \n", "test.txt": TEST}, {}, "not UTF-8"),
    ({"train.txt": "the \x00\x01 cat \n", "test.txt": TEST}, {}, "corrupt"),
    ({"train.txt": gzip.compress(TRAIN.encode()), "test.txt": TEST}, {}, "gzip"),
    ({"train.txt": TRAIN, "test.txt": TEST}, {"train_split": "dev"}, "unknown split"),
    ({"train.txt": TRAIN, "test.txt": TEST}, {"eval_split": "valid"}, "not in the WikiText directory"),
    ({"train.txt": TRAIN, "test.txt": TEST}, {"max_vocab": 1}, "vocabulary too small"),
    ({"train.txt": TRAIN, "test.txt": TEST}, {"min_count": 100}, "vocabulary too small"),
    ({"train.txt": TRAIN}, {}, "need two WikiText splits"),
    ({"train.txt": TRAIN, "test.txt": TRAIN}, {}, "identical"),
    ({"notes.md": "hello"}, {}, "no WikiText split files"),
], ids=["empty", "blank-lines", "non-utf8", "control-chars", "gzip", "unknown-split", "missing-split",
        "max-vocab", "min-count", "one-split", "same-file", "wrong-dir"])
def test_bad_input_is_one_line_user_error(tmp_path, files, kwargs, message):
    d = corpus(tmp_path / "d", files)
    with pytest.raises(UserError) as exc:
        load_wikitext(d, **kwargs)
    text = str(exc.value)
    assert message in text and "\n" not in text


def test_missing_directory_says_where_to_get_the_data(tmp_path):
    for arg in (None, tmp_path / "nowhere"):
        with pytest.raises(UserError) as exc:
            load_wikitext(arg)
        assert "DYNAMICS_WIKITEXT" in str(exc.value) and "huggingface.co" in str(exc.value)
        assert "\n" not in str(exc.value)


def test_mislabelled_published_file(tmp_path, monkeypatch):
    # a file whose hash is the published *valid* split must not pass as test data
    text = " some text . \n"
    monkeypatch.setitem(W.KNOWN_SHA256, W.hashlib.sha256(text.encode()).hexdigest(), ("WikiText-2 v1", "valid"))
    d = corpus(tmp_path / "d", {"train.txt": TRAIN, "test.txt": text})
    with pytest.raises(UserError, match="mislabelled"):
        load_wikitext(d)


def test_real_wikitext_files():
    """The one test on the real files: skipped only when DYNAMICS_WIKITEXT is unset; set but wrong fails."""
    if not REAL:
        pytest.skip("DYNAMICS_WIKITEXT is not set")
    d = Path(REAL)
    assert d.is_dir(), f"DYNAMICS_WIKITEXT={d} is set but is not a directory"
    wt = load_wikitext(d)  # a UserError here fails the test loudly
    assert {"valid", "test"} <= set(wt.files)
    for split, n in (("valid", 217_646), ("test", 245_569)):
        assert wt.files[split]["known"], f"{wt.files[split]['path']} does not match the published {split} hash"
        assert wt.files[split]["tokens"] == n
    if "train" not in wt.files:
        assert (wt.train_split, wt.eval_split) == ("valid", "test")
        assert wt.note == "training split absent: trained on valid, evaluated on test"
    assert wt.vocab[0] == "<unk>" and wt.V > 10_000
