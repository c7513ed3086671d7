"""The WikiText reader: find the split files, check them, build a vocabulary, encode, cache.

WikiText (Merity, Xiong, Bradbury, Socher 2016, "Pointer Sentinel Mixture Models") ships as

* tokenized v1: ``wiki.{train,valid,test}.tokens`` (the PyTorch word-language-model example renames
  them ``{train,valid,test}.txt``): space-separated tokens, rare words already replaced by ``<unk>``;
* raw: ``wiki.{train,valid,test}.raw``: the same tokenisation without the ``<unk>`` replacement.

Both are read the same way, as the PyTorch example does: each line is ``line.split()`` followed by
one ``<eos>``, so the published WikiText-2 ``valid.txt`` has 3,760 lines and 217,646 tokens.  The
vocabulary is built from the training split only (index 0 is ``<unk>``, then tokens by descending
count, ties by first occurrence), with a frequency cut-off ``min_count`` and a size cap
``max_vocab``; every other token, in every split, encodes as ``<unk>``.

When the training split is absent (the shared copy holds only valid and test), the reader trains on
``valid`` and evaluates on ``test``, and :attr:`WikiText.note` says so; every result built on it must
carry that note.  Files are recognised by SHA-256 against the published release; a file that decodes
and tokenises but matches no published hash is used and reported as "unrecognised".

The encoding is cached (``$DYNAMICS_CACHE`` or ``~/.cache/dynamics``, never inside ``results/``) under
a key made of the files' hashes and the vocabulary options, so a changed file is re-encoded.
Nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..runtime import sha256_file

ENV_DATA = "DYNAMICS_WIKITEXT"
ENV_CACHE = "DYNAMICS_CACHE"
UNK, EOS = "<unk>", "<eos>"
SPLITS = ("train", "valid", "test")
LAYOUTS = ("tokens", "raw")
CACHE_VERSION = 1  # bump when the encoding rules change, so old cache entries are not reused

WHERE_TO_GET = ("get WikiText-2 v1 (wiki.valid.tokens / wiki.test.tokens, or valid.txt / test.txt as in the "
                "PyTorch word_language_model example) from https://huggingface.co/datasets/Salesforce/wikitext "
                "or https://github.com/pytorch/examples/tree/main/word_language_model/data/wikitext-2, "
                f"and pass its directory as data_dir (--set data_dir=DIR) or in ${ENV_DATA}")

# SHA-256 of published files, byte for byte.  Only hashes checked against a published copy are here
# (the WikiText-2 v1 validation and test splits, /work/shared/data/wikitext-2/README.md); any other
# well-formed file is accepted and reported as unrecognised.
KNOWN_SHA256 = {
    "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8": ("WikiText-2 v1", "valid"),
    "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0": ("WikiText-2 v1", "test"),
}

# File names per layout, in order of preference within a layout.
NAMES = {"tokens": ("{split}.txt", "wiki.{split}.tokens"), "raw": ("wiki.{split}.raw",)}

_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"7z\xbc\xaf": "7z"}


@dataclasses.dataclass(frozen=True)
class WikiText:
    """An encoded WikiText corpus.

    vocab:  list of V token strings; vocab[0] == "<unk>" (byte level, :func:`load_wikitext_bytes`: the 256 bytes)
    train:  (N_train,) int64 token ids of the training split (``valid`` when train is absent)
    eval:   (N_eval,) int64 token ids of the evaluation split (``test`` when train is absent)
    train_split, eval_split: which files those are ("train", "valid" or "test")
    note:   one line every result built on this corpus must carry (which splits, why)
    files:  split -> {"path", "sha256", "known", "release", "layout", "tokens"} for every split found
            ("tokens" is None for a split found but not loaded)
    """

    vocab: list[str]
    train: np.ndarray
    eval: np.ndarray
    train_split: str
    eval_split: str
    note: str
    files: dict
    min_count: int = 1
    max_vocab: int | None = None

    @property
    def V(self) -> int:
        return len(self.vocab)

    @property
    def index(self) -> dict[str, int]:
        """token string -> id (built on demand; not needed in hot paths)."""
        return {w: i for i, w in enumerate(self.vocab)}

    def decode(self, ids) -> list[str]:
        return [self.vocab[int(i)] for i in np.asarray(ids).ravel()]

    def split(self, name: str) -> np.ndarray:
        """Token ids of the training or evaluation split by its file name ("valid", "test", ...)."""
        if name == self.train_split:
            return self.train
        if name == self.eval_split:
            return self.eval
        raise UserError(f"split {name!r} is not loaded (loaded: {self.train_split}, {self.eval_split})")

    def provenance(self) -> dict:
        """What a result manifest should record: the note, the splits, and each file's hash."""
        return {"wikitext_note": self.note, "wikitext_train_split": self.train_split,
                "wikitext_eval_split": self.eval_split, "wikitext_vocab": self.V,
                "wikitext_min_count": self.min_count, "wikitext_max_vocab": self.max_vocab,
                "wikitext_files": {s: {k: f[k] for k in ("path", "sha256", "known", "release", "tokens")}
                                   for s, f in self.files.items()}}


def resolve_dir(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir`` or ``$DYNAMICS_WIKITEXT``; a missing or empty setting is a UserError."""
    raw = os.fspath(data_dir) if data_dir not in (None, "") else os.environ.get(ENV_DATA, "")
    if not raw:
        raise UserError(f"no WikiText directory given: {WHERE_TO_GET}")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise UserError(f"WikiText directory {path} does not exist: {WHERE_TO_GET}")
    return path


def check_wikitext(data_dir: str | os.PathLike | None = None) -> str:
    """Cheap pre-flight check (no reading, no hashing of single files): the directory exists and
    holds a training and an evaluation split.  Returns the note :func:`load_wikitext` would attach;
    raises UserError otherwise."""
    return choose_splits(find_files(resolve_dir(data_dir)), None, None)[2]


def find_files(root: Path, layout: str = "auto") -> dict[str, tuple[Path, str]]:
    """split -> (path, layout) for every split present.  Tokenized files win over raw ones in
    ``auto`` mode; two tokenized names for one split are an ambiguity only if their bytes differ."""
    if layout not in ("auto",) + LAYOUTS:
        raise UserError(f"unknown WikiText layout {layout!r}; expected auto, tokens or raw")
    order = LAYOUTS if layout == "auto" else (layout,)
    found: dict[str, tuple[Path, str]] = {}
    for split in SPLITS:
        for lay in order:
            hits = [root / n.format(split=split) for n in NAMES[lay] if (root / n.format(split=split)).is_file()]
            if len(hits) > 1 and len({sha256_file(p) for p in hits}) > 1:
                raise UserError(f"{root} holds two different {split} files ({hits[0].name}, {hits[1].name}); "
                                "keep one")
            if hits:
                found[split] = (hits[0], lay)
                break
    if not found:
        names = ", ".join(n.format(split=s) for lay in order for n in NAMES[lay] for s in ("valid",))
        raise UserError(f"no WikiText split files in {root} (looked for e.g. {names}): {WHERE_TO_GET}")
    return found


def choose_splits(found: dict, train_split: str | None, eval_split: str | None) -> tuple[str, str, str]:
    """(train split, eval split, note).  Defaults: train/test when train exists, else valid/test."""
    for name in (train_split, eval_split):
        if name is not None and name not in SPLITS:
            raise UserError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        if name is not None and name not in found:
            raise UserError(f"split {name!r} is not in the WikiText directory (found: {', '.join(found)})")
    if train_split is None:
        train_split = "train" if "train" in found else "valid"
    if eval_split is None:
        eval_split = next((s for s in ("test", "valid") if s in found and s != train_split), None)
    if train_split not in found or eval_split is None:
        raise UserError(f"need two WikiText splits (training and evaluation), found only "
                        f"{', '.join(found) or 'none'}: {WHERE_TO_GET}")
    if train_split == eval_split:
        raise UserError(f"training and evaluation split are both {train_split!r}; choose two different splits")
    if "train" not in found:
        note = f"training split absent: trained on {train_split}, evaluated on {eval_split}"
    else:
        note = f"trained on {train_split}, evaluated on {eval_split}"
    return train_split, eval_split, note




def read_text(path: Path) -> str:
    """The checked text of one split file: compressed, non-UTF-8 or control-character files are a UserError."""
    data = path.read_bytes()
    for magic, kind in _COMPRESSED.items():
        if data.startswith(magic):
            raise UserError(f"{path} is a {kind} archive, not a WikiText text file; unpack it first")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}): not a WikiText file") from None
    bad = next((c for c in text if c < " " and c not in "\n\r\t"), None)
    if bad is not None:
        raise UserError(f"{path} holds control character {ord(bad):#04x} at offset {text.index(bad)}: "
                        "the file is corrupt or not WikiText")
    return text


def read_tokens(path: Path) -> list[str]:
    """The tokens of one split file: ``line.split() + ["<eos>"]`` per line.

    A file that is empty, not UTF-8, compressed, or holds control characters is a UserError.
    """
    lines = io.StringIO(read_text(path)).readlines()
    words = [w for line in lines for w in (*line.split(), EOS)]
    if len(words) == len(lines):  # only <eos>: no text at all
        raise UserError(f"{path} is empty (no tokens): not a WikiText file")
    return words


def build_vocab(words: list[str], min_count: int, max_vocab: int | None) -> list[str]:
    """``<unk>`` first, then tokens with count >= min_count by descending count (ties: first seen),
    at most ``max_vocab`` entries in all."""
    counts = Counter(words)
    counts.pop(UNK, None)
    kept = [w for w, c in counts.most_common() if c >= min_count]  # most_common is stable: first seen wins ties
    vocab = [UNK] + kept
    if max_vocab is not None:
        vocab = vocab[:max_vocab]
    if len(vocab) < 2:
        raise UserError(f"vocabulary too small: min_count={min_count}, max_vocab={max_vocab} leave only "
                        f"{len(vocab)} token(s) of {len(counts) + 1}; lower min_count or raise max_vocab")
    return vocab


def encode(words: list[str], index: dict[str, int]) -> np.ndarray:
    return np.fromiter((index.get(w, 0) for w in words), dtype=np.int64, count=len(words))


def cache_dir() -> Path:
    raw = os.environ.get(ENV_CACHE)
    return (Path(raw).expanduser() if raw else Path.home() / ".cache" / "dynamics") / "wikitext"


def _cache_key(hashes: dict[str, str], train_split: str, eval_split: str, min_count: int,
               max_vocab: int | None) -> str:
    text = f"v{CACHE_VERSION}|{train_split}:{hashes[train_split]}|{eval_split}:{hashes[eval_split]}|" \
           f"{min_count}|{max_vocab}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_load(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z["vocab"].tolist()), z["train"].astype(np.int64), z["eval"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError):
        return None  # missing or damaged: rebuild


def _cache_save(path: Path, vocab: list[str], train: np.ndarray, ev: np.ndarray) -> None:
    """Atomic write; a cache that cannot be written is skipped, never an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, vocab=np.array(vocab, dtype=str), train=train, eval=ev)
        os.replace(tmp, path)
    except OSError:
        pass


def _file_records(found: dict, tr: str, ev: str) -> tuple[dict, dict]:
    """(files, hashes) per split found: path, SHA-256, published release; mislabelled or identical
    training and evaluation files are a UserError."""
    files, hashes = {}, {}
    for split, (path, lay) in found.items():
        digest = sha256_file(path)
        release = KNOWN_SHA256.get(digest)
        if release is not None and release[1] != split:
            raise UserError(f"{path} is byte-identical to the published {release[0]} {release[1]} split, "
                            f"not {split}: the files are mislabelled")
        hashes[split] = digest
        files[split] = {"path": str(path.resolve()), "sha256": digest, "known": release is not None,
                        "release": f"{release[0]} {release[1]}" if release else "unrecognised",
                        "layout": lay, "tokens": None}
    if hashes[tr] == hashes[ev]:
        raise UserError(f"the {tr} and {ev} files are identical: evaluation would be on the training data")
    return files, hashes


def load_wikitext(data_dir: str | os.PathLike | None = None, min_count: int = 1, max_vocab: int | None = None,
                  train_split: str | None = None, eval_split: str | None = None, layout: str = "auto",
                  cache: bool = True) -> WikiText:
    """Read, check, encode (or load from cache) the WikiText splits in ``data_dir``.

    data_dir: the directory, or None for ``$DYNAMICS_WIKITEXT``.  min_count: tokens seen fewer times
    in the training split become ``<unk>``.  max_vocab: cap on the vocabulary size including ``<unk>``.
    train_split/eval_split: override the default choice (train/test, or valid/test without train).
    layout: "auto", "tokens" or "raw".  Every problem with the data is a one-line UserError.
    """
    if not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise UserError(f"min_count must be an integer >= 1, got {min_count!r}")
    if max_vocab is not None and (not isinstance(max_vocab, (int, np.integer)) or max_vocab < 2):
        raise UserError(f"vocabulary too small: max_vocab must be >= 2 (<unk> and one token), got {max_vocab!r}")
    root = resolve_dir(data_dir)
    found = find_files(root, layout)
    tr, ev, note = choose_splits(found, train_split, eval_split)
    files, hashes = _file_records(found, tr, ev)
    key = _cache_key(hashes, tr, ev, int(min_count), max_vocab)
    path = cache_dir() / f"{key}.npz"
    hit = _cache_load(path) if cache else None
    if hit is None:
        train_words = read_tokens(Path(files[tr]["path"]))
        eval_words = read_tokens(Path(files[ev]["path"]))
        vocab = build_vocab(train_words, int(min_count), max_vocab)
        index = {w: i for i, w in enumerate(vocab)}
        train_ids, eval_ids = encode(train_words, index), encode(eval_words, index)
        if cache:
            _cache_save(path, vocab, train_ids, eval_ids)
    else:
        vocab, train_ids, eval_ids = hit
    files[tr]["tokens"], files[ev]["tokens"] = int(len(train_ids)), int(len(eval_ids))
    return WikiText(vocab=vocab, train=train_ids, eval=eval_ids, train_split=tr, eval_split=ev, note=note,
                    files=files, min_count=int(min_count), max_vocab=max_vocab)


def load_wikitext_bytes(data_dir: str | os.PathLike | None = None, train_split: str | None = None,
                        eval_split: str | None = None, layout: str = "auto") -> WikiText:
    """WikiText as raw bytes: a character-level corpus with vocabulary 256 and no tokenizer.

    The training and evaluation splits in ``data_dir`` (or ``$DYNAMICS_WIKITEXT``) are found, chosen
    (valid/test when train is absent) and checked as by :func:`load_wikitext`; ``train`` and ``eval``
    are then the UTF-8 bytes of the whole files exactly as stored, int64 in 0..255 (for the v1 token
    layout: words separated by spaces, ``<unk>`` and `` @-@ `` spelled out, one newline per line).
    ``vocab`` holds the 256 byte values as one-character latin-1 strings (id = byte), the note starts
    with "bytes; " and ``files[split]["tokens"]`` counts bytes.  Nothing is cached: reading 2 MB is instant.
    """
    found = find_files(resolve_dir(data_dir), layout)
    tr, ev, note = choose_splits(found, train_split, eval_split)
    files, _ = _file_records(found, tr, ev)
    streams = {}
    for split in (tr, ev):
        raw = read_text(Path(files[split]["path"])).encode("utf-8")
        if not raw.strip():
            raise UserError(f"{files[split]['path']} is empty: not a WikiText file")
        streams[split] = np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
        files[split]["tokens"] = len(raw)
    return WikiText(vocab=[bytes([b]).decode("latin-1") for b in range(256)], train=streams[tr], eval=streams[ev],
                    train_split=tr, eval_split=ev, note=f"bytes; {note}", files=files)
